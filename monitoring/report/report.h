// The run report: DIR/report.html, one self-contained page (inline SVG plots, an inline script
// that only counts what was drawn, the retrieval grid as a data: URI; nothing fetched) from what a
// run leaves in its output directory: history.jsonl, metrics.json, config.textproto and, when
// present, retrieval_grid.jpg. Written by `reid report --run_dir=DIR` and by rank 0 at the end of
// a run. Every input is untrusted: sizes are bounded and every string is HTML-escaped.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "monitoring/report/history_reader.h"

namespace reid::report {

inline constexpr char kHistoryFile[] = "history.jsonl";
inline constexpr char kMetricsFile[] = "metrics.json";     // the last evaluation (trainer)
inline constexpr char kConfigFile[] = "config.textproto";  // the effective config (trainer)
inline constexpr char kRetrievalGridFile[] = "retrieval_grid.jpg";  // reid eval --visualize_out
inline constexpr char kReportFile[] = "report.html";

// metrics.json (trainer/eval/evaluator.cc EvalResultJson): NaN where a key is missing or bad.
struct MetricsSummary {
  double map = NAN;
  std::vector<double> cmc;  // CMC at ranks 1.. (at most 50 kept)
  double num_valid_queries = NAN, num_query = NAN, num_gallery = NAN, stage = NAN, epoch = NAN;
};

// Everything the page shows, as read from the run directory.
struct RunFiles {
  std::string run_dir;
  History history;
  bool have_metrics = false;
  MetricsSummary metrics;
  std::string config_text;         // empty when there is none
  bool config_truncated = false;   // longer than the limit: only its start is shown
  std::string grid_jpeg;           // the retrieval grid's bytes; empty when there is none
  std::vector<std::string> notes;  // problems with the optional files (shown, never fatal)
};

// What WriteRunReport did, for the caller to print.
struct ReportInfo {
  std::string path;  // DIR/report.html
  int64_t step_records = 0, eval_records = 0, bad_lines = 0;
  std::vector<std::string> warnings;  // bad history lines and unreadable optional files
};

// Reads the run directory: NotFound (a user error) when DIR or DIR/history.jsonl is missing;
// problems with the optional files become RunFiles::notes.
StatusOr<RunFiles> LoadRunFiles(const std::string& run_dir);

// Parses metrics.json text (at most 1 MiB); InvalidArgument naming `name` when it is not a JSON
// object. Missing or non-numeric keys stay NaN.
StatusOr<MetricsSummary> ParseMetricsJson(const std::string& text, const std::string& name);

// The report page (report_html.cc).
std::string RenderReportHtml(const RunFiles& files);

// Writes DIR/report.html (atomically: a temporary file renamed over it). NotFound when DIR or its
// history.jsonl is missing, Internal when the page cannot be written. `info` may be null.
Status WriteRunReport(const std::string& run_dir, ReportInfo* info = nullptr);

}  // namespace reid::report
