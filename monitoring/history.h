// OUTPUT_DIR/history.jsonl: one proto/history.proto HistoryRecord per line in JSON, appended
// (a resumed run continues the file), flushed per line so that a reader sees whole records.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "base/status.h"
#include "proto/history.pb.h"

namespace reid::monitoring {

// The JSON line of one record (no newline): lowerCamelCase keys, every field printed (kind
// "STEP" and zero values too), as `reid report` reads it.
std::string HistoryRecordJson(const proto::HistoryRecord& record);

class HistoryWriter {
 public:
  // Opens `path` for appending, creating it. When the file ends inside a line (a run killed
  // mid-write), the next record starts on a line of its own. Internal error when not writable.
  static StatusOr<std::unique_ptr<HistoryWriter>> Open(const std::string& path);
  ~HistoryWriter();
  HistoryWriter(const HistoryWriter&) = delete;
  HistoryWriter& operator=(const HistoryWriter&) = delete;

  // Appends one line and flushes it.
  Status Append(const proto::HistoryRecord& record);
  const std::string& path() const { return path_; }

 private:
  HistoryWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  std::string path_;
  std::FILE* file_;
};

}  // namespace reid::monitoring
