// Loads a run directory for the report and writes DIR/report.html (see report.h).
#include "monitoring/report/report.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <cstdio>

#include "base/file_util.h"

namespace reid::report {
namespace {

constexpr int64_t kMaxMetricsBytes = 1 << 20;
constexpr int64_t kMaxConfigBytes = 1 << 20;       // shown
constexpr int64_t kMaxConfigFileBytes = 16 << 20;  // read (a config file's own limit)
constexpr int64_t kMaxGridBytes = 16 << 20;
constexpr size_t kMaxCmc = 50;

std::string Join(const std::string& dir, const char* name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// An optional file of the run directory through the bounded regular-file reader: false when it
// is absent (silently) or cannot be read (a note naming it: a FIFO, a directory, too large).
bool ReadOptional(const std::string& path, uint64_t max_bytes, const std::string& what,
                  std::string* text, std::vector<std::string>* notes) {
  StatusOr<std::string> read = base::ReadRegularFile(path, max_bytes, what);
  if (read.ok()) {
    *text = std::move(*read);
    return true;
  }
  if (read.status().code() != Status::Code::kNotFound) {
    notes->push_back(read.status().message() + ", not shown");
  }
  return false;
}

double Number(const google::protobuf::Struct& s, const char* key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || !it->second.has_number_value()) return NAN;
  return it->second.number_value();
}

void LoadMetrics(const std::string& path, RunFiles* files) {
  std::string text;  // absent: a run without an evaluation yet
  if (!ReadOptional(path, kMaxMetricsBytes, "metrics.json", &text, &files->notes)) return;
  StatusOr<MetricsSummary> m = ParseMetricsJson(text, path);
  if (!m.ok()) {
    files->notes.push_back(m.status().message());
    return;
  }
  files->metrics = *m;
  files->have_metrics = true;
}

// Up to kMaxConfigBytes of the config are shown; the file itself may be a whole config file.
void LoadConfig(const std::string& path, RunFiles* files) {
  std::string text;
  if (!ReadOptional(path, kMaxConfigFileBytes, "a config file", &text, &files->notes)) return;
  files->config_truncated = text.size() > static_cast<size_t>(kMaxConfigBytes);
  if (files->config_truncated) text.resize(static_cast<size_t>(kMaxConfigBytes));
  files->config_text = std::move(text);
}

void LoadGrid(const std::string& path, RunFiles* files) {
  std::string bytes;
  if (!ReadOptional(path, kMaxGridBytes, "the retrieval grid", &bytes, &files->notes)) return;
  if (bytes.size() < 4 || bytes.compare(0, 3, "\xFF\xD8\xFF") != 0) {
    files->notes.push_back(path + ": not a JPEG file, not shown");
    return;
  }
  files->grid_jpeg = std::move(bytes);
}

}  // namespace

StatusOr<MetricsSummary> ParseMetricsJson(const std::string& text, const std::string& name) {
  google::protobuf::Struct s;
  const auto status = google::protobuf::util::JsonStringToMessage(text, &s);
  if (text.size() > static_cast<size_t>(kMaxMetricsBytes) || !status.ok()) {
    return Status::InvalidArgument(name + ": not a JSON object of at most 1 MiB (" +
                                   PrintableOneLine(std::string(status.message()), 200) + ")");
  }
  MetricsSummary m;
  m.map = Number(s, "mAP");
  m.num_valid_queries = Number(s, "num_valid_queries");
  m.num_query = Number(s, "num_query");
  m.num_gallery = Number(s, "num_gallery");
  m.stage = Number(s, "stage");
  m.epoch = Number(s, "epoch");
  auto cmc = s.fields().find("cmc");
  if (cmc != s.fields().end() && cmc->second.has_list_value()) {
    for (const auto& v : cmc->second.list_value().values()) {
      if (m.cmc.size() >= kMaxCmc) break;
      m.cmc.push_back(v.has_number_value() ? v.number_value() : NAN);
    }
  }
  return m;
}

StatusOr<RunFiles> LoadRunFiles(const std::string& run_dir) {
  struct stat st;
  if (run_dir.empty()) return Status::InvalidArgument("--run_dir is required");
  if (stat(run_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound("--run_dir=" + run_dir + ": no such directory");
  }
  RunFiles files;
  files.run_dir = run_dir;
  StatusOr<History> history = ReadHistory(Join(run_dir, kHistoryFile));
  if (!history.ok()) return history.status();
  files.history = std::move(*history);
  LoadMetrics(Join(run_dir, kMetricsFile), &files);
  LoadConfig(Join(run_dir, kConfigFile), &files);
  LoadGrid(Join(run_dir, kRetrievalGridFile), &files);
  return files;
}

Status WriteRunReport(const std::string& run_dir, ReportInfo* info) {
  StatusOr<RunFiles> files = LoadRunFiles(run_dir);
  if (!files.ok()) return files.status();
  const std::string path = Join(run_dir, kReportFile);
  // A directory or FIFO named report.html is the user's to move (InvalidArgument naming it); the
  // page is written beside it and renamed over the old one.
  REID_RETURN_IF_ERROR(base::CheckOutputFile(path));
  const std::string html = RenderReportHtml(*files);
  REID_RETURN_IF_ERROR(base::WriteFileAtomically(path, html));
  if (info != nullptr) {
    const History& h = files->history;
    *info = {path, h.step_records, h.eval_records, h.bad_lines, h.warnings};
    if (h.warnings_dropped > 0) {
      info->warnings.push_back("... and " + std::to_string(h.warnings_dropped) + " more");
    }
    info->warnings.insert(info->warnings.end(), files->notes.begin(), files->notes.end());
  }
  return Status::Ok();
}

}  // namespace reid::report
