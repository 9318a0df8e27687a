// Loads a run directory for the report and writes DIR/report.html (see report.h).
#include "trainer/report/report.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace reid::report {
namespace {

constexpr int64_t kMaxMetricsBytes = 1 << 20;
constexpr int64_t kMaxConfigBytes = 1 << 20;
constexpr int64_t kMaxGridBytes = 16 << 20;
constexpr size_t kMaxCmc = 50;

std::string Join(const std::string& dir, const char* name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

enum class FileKind { kMissing, kRegular, kOther };

FileKind Kind(const std::string& path, int64_t* size) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return FileKind::kMissing;
  *size = static_cast<int64_t>(st.st_size);
  return S_ISREG(st.st_mode) ? FileKind::kRegular : FileKind::kOther;
}

// Up to max_bytes of the file at `path`; false (and a note) when it cannot be read.
bool ReadPrefix(const std::string& path, int64_t max_bytes, std::string* text,
                std::vector<std::string>* notes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    notes->push_back(path + ": cannot open for reading");
    return false;
  }
  text->resize(static_cast<size_t>(max_bytes));
  in.read(text->data(), max_bytes);
  text->resize(static_cast<size_t>(in.gcount()));
  return true;
}

double Number(const google::protobuf::Struct& s, const char* key) {
  auto it = s.fields().find(key);
  if (it == s.fields().end() || !it->second.has_number_value()) return NAN;
  return it->second.number_value();
}

void LoadMetrics(const std::string& path, RunFiles* files) {
  int64_t size = 0;
  const FileKind kind = Kind(path, &size);
  if (kind == FileKind::kMissing) return;  // a run without an evaluation yet
  std::string text;
  if (kind != FileKind::kRegular || size > kMaxMetricsBytes) {
    files->notes.push_back(path + ": not a regular file of at most 1 MiB, not shown");
    return;
  }
  if (!ReadPrefix(path, kMaxMetricsBytes, &text, &files->notes)) return;
  StatusOr<MetricsSummary> m = ParseMetricsJson(text, path);
  if (!m.ok()) {
    files->notes.push_back(m.status().message());
    return;
  }
  files->metrics = *m;
  files->have_metrics = true;
}

void LoadConfig(const std::string& path, RunFiles* files) {
  int64_t size = 0;
  const FileKind kind = Kind(path, &size);
  if (kind == FileKind::kMissing) return;
  if (kind != FileKind::kRegular) {
    files->notes.push_back(path + ": not a regular file, not shown");
    return;
  }
  ReadPrefix(path, kMaxConfigBytes, &files->config_text, &files->notes);
  files->config_truncated = size > kMaxConfigBytes;
}

void LoadGrid(const std::string& path, RunFiles* files) {
  int64_t size = 0;
  const FileKind kind = Kind(path, &size);
  if (kind == FileKind::kMissing) return;
  if (kind != FileKind::kRegular || size > kMaxGridBytes) {
    files->notes.push_back(path + ": not a regular file of at most 16 MiB, not shown");
    return;
  }
  std::string bytes;
  if (!ReadPrefix(path, kMaxGridBytes, &bytes, &files->notes)) return;
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
  const std::string html = RenderReportHtml(*files);
  const std::string path = Join(run_dir, kReportFile);
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << html;
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      return Status::Internal(tmp + ": cannot write the report");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return Status::Internal(path + ": cannot rename " + tmp + " over it");
  }
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
