// Fuzzes the run report's readers: the input as history.jsonl (ParseHistory) and as metrics.json
// (ParseMetricsJson), rendered to the report page. Any input must give a page whose only script is
// our own (every string from the file escaped), with balanced SVG elements; never a crash.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "monitoring/report/report.h"

namespace {

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  reid::report::HistoryLimits limits;
  limits.max_kept_records = 64;  // thinning kicks in within the fuzzer's input sizes
  limits.max_line_bytes = 4096;
  std::istringstream in(text);
  reid::report::RunFiles files;
  files.run_dir = "<fuzz>";
  files.history = reid::report::ParseHistory(in, "history.jsonl", limits);
  for (const std::string& w : files.history.warnings) {
    if (w.find('\n') != std::string::npos) __builtin_trap();  // warnings are single lines
  }
  reid::StatusOr<reid::report::MetricsSummary> m =
      reid::report::ParseMetricsJson(text, "metrics.json");
  if (m.ok()) {
    files.metrics = *m;
    files.have_metrics = true;
  } else if (m.status().message().empty()) {
    __builtin_trap();  // errors say what
  }
  files.config_text = text.substr(0, 1024);
  const std::string html = reid::report::RenderReportHtml(files);
  if (Count(html, "<script") != 1) __builtin_trap();  // input text became markup
  if (Count(html, "<svg") != Count(html, "</svg>")) __builtin_trap();
  return 0;
}
