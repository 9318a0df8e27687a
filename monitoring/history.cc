// history.jsonl lines through protobuf's JSON printer.
#include "monitoring/history.h"

#include <google/protobuf/util/json_util.h>

#include <cerrno>
#include <cstring>

namespace reid::monitoring {

std::string HistoryRecordJson(const proto::HistoryRecord& record) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;  // kind STEP (the enum's 0) and zero values
  options.preserve_proto_field_names = false;    // imagesPerS, dataWaitFraction
  options.add_whitespace = false;                // one line
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(record, &json, options);
  CHECK(status.ok()) << "HistoryRecord to JSON: " << status.ToString();
  return json;
}

StatusOr<std::unique_ptr<HistoryWriter>> HistoryWriter::Open(const std::string& path) {
  bool ends_mid_line = false;
  if (std::FILE* in = std::fopen(path.c_str(), "rb")) {
    if (std::fseek(in, -1, SEEK_END) == 0) ends_mid_line = std::fgetc(in) != '\n';
    std::fclose(in);
  }
  std::FILE* file = std::fopen(path.c_str(), "ab");
  if (file == nullptr) {
    return Status::Internal("cannot open " + path + " for appending: " + std::strerror(errno));
  }
  if (ends_mid_line) std::fputc('\n', file);
  return std::unique_ptr<HistoryWriter>(new HistoryWriter(path, file));
}

HistoryWriter::~HistoryWriter() { std::fclose(file_); }

Status HistoryWriter::Append(const proto::HistoryRecord& record) {
  const std::string line = HistoryRecordJson(record) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    return Status::Internal("cannot append to " + path_ + ": " + std::strerror(errno));
  }
  return Status::Ok();
}

}  // namespace reid::monitoring
