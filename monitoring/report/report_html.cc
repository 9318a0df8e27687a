// The report page: summary tables, inline SVG plots of the history, the retrieval grid as a
// data: URI and the effective config; every string that came from a file is escaped.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>

#include "base/build_info.h"
#include "monitoring/report/report.h"
#include "monitoring/report/svg_plot.h"

namespace reid::report {
namespace {

constexpr size_t kMaxEvalRows = 200;

const char kHead[] = R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>reid run report</title>
<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1220px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: left; font-size: 13px; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { color: #a04000; font-size: 13px; } .muted { color: #777; }
pre { background: #f7f7f7; padding: 10px; overflow: auto; max-height: 520px; font-size: 12px; }
div.plots { display: flex; flex-wrap: wrap; gap: 12px; }
svg.plot { border: 1px solid #eee; }
img.grid { max-width: 100%; border: 1px solid #ccc; }
</style>
</head>
<body>
)";

// The counts a test (headless Chromium) reads back from document.title after the page ran.
const char kTail[] = R"(<script>
(function () {
  var plots = document.querySelectorAll('svg.plot').length;
  var lines = document.querySelectorAll('svg.plot polyline').length;
  var points = document.querySelectorAll('svg.plot circle').length;
  document.title = 'reid run report: ' + plots + ' plots, ' + lines + ' lines, ' + points + ' points';
})();
</script>
</body>
</html>
)";

std::string Num(double v, const char* format = "%.4g") {
  if (!std::isfinite(v)) return std::isnan(v) ? "&mdash;" : (v > 0 ? "inf" : "-inf");
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string Percent(double v) { return std::isfinite(v) ? Num(100 * v, "%.2f") + "%" : Num(v); }

std::string Row(const std::string& key, const std::string& value) {
  return "<tr><th>" + EscapeXml(key) + "</th><td>" + value + "</td></tr>\n";
}

std::string Base64(const std::string& bytes) {
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
    out += kChars[(v >> 18) & 63];
    out += kChars[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? kChars[(v >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? kChars[v & 63] : '=';
  }
  return out;
}

// Two plots side by side on a 1280-pixel-wide window.
PlotOptions Options(const std::string& title, const std::string& x_label,
                    const std::string& y_label) {
  PlotOptions o{title, x_label, y_label};
  o.width = 590;
  return o;
}

double Cmc(const proto::HistoryRecord& r, int k) { return r.cmc_size() > k ? r.cmc(k) : NAN; }

std::string Summary(const RunFiles& f) {
  const History& h = f.history;
  std::string s = "<h2>Summary</h2>\n<table>\n";
  s += Row("history.jsonl", std::to_string(h.lines) + " lines: " + std::to_string(h.step_records) +
                                " training records, " + std::to_string(h.eval_records) +
                                " evaluations, " + std::to_string(h.bad_lines) + " skipped" +
                                (h.truncated ? " (not read to the end)" : ""));
  if (!h.steps.empty()) {
    const proto::HistoryRecord& first = h.steps.front();
    const proto::HistoryRecord& last = h.steps.back();
    s += Row("last training record", "stage " + std::to_string(last.stage()) + ", epoch " +
                                         std::to_string(last.epoch()) + ", step " +
                                         std::to_string(last.step()));
    std::string losses;
    for (const auto& [name, value] :
         std::map<std::string, double>(last.losses().begin(), last.losses().end())) {
      losses += (losses.empty() ? "" : ", ") + EscapeXml(name) + " " + Num(value);
    }
    s += Row("last losses", losses.empty() ? "&mdash;" : losses);
    s += Row("last learning rate", Num(last.lr(), "%.3e"));
    s += Row("last images/s", Num(last.images_per_s(), "%.1f"));
    s += Row("training time covered", Num((last.time() - first.time()) / 60, "%.1f") + " min");
  }
  if (!h.evals.empty()) {
    double best_map = NAN, best_r1 = NAN;
    for (const proto::HistoryRecord& e : h.evals) {
      if (std::isfinite(e.map()) && !(e.map() <= best_map)) best_map = e.map();
      if (std::isfinite(Cmc(e, 0)) && !(Cmc(e, 0) <= best_r1)) best_r1 = Cmc(e, 0);
    }
    s += Row("best mAP / Rank-1 (history)", Percent(best_map) + " / " + Percent(best_r1));
  }
  return s + "</table>\n";
}

std::string MetricsTable(const RunFiles& f) {
  std::string s = "<h2>Last evaluation (metrics.json)</h2>\n";
  if (!f.have_metrics) return s + "<p class=\"muted\">No metrics.json (no evaluation yet).</p>\n";
  const MetricsSummary& m = f.metrics;
  auto cmc = [&](size_t k) { return m.cmc.size() > k ? Percent(m.cmc[k]) : Num(NAN); };
  s += "<table>\n" + Row("mAP", Percent(m.map)) + Row("Rank-1", cmc(0)) + Row("Rank-5", cmc(4)) +
       Row("Rank-10", cmc(9)) + Row("valid queries", Num(m.num_valid_queries, "%.0f")) +
       Row("queries", Num(m.num_query, "%.0f")) + Row("gallery", Num(m.num_gallery, "%.0f")) +
       Row("stage", Num(m.stage, "%.0f")) + Row("epoch", Num(m.epoch, "%.0f"));
  return s + "</table>\n";
}

std::string Warnings(const RunFiles& f) {
  const History& h = f.history;
  if (h.warnings.empty() && f.notes.empty()) return "";
  std::string s = "<h2>Warnings</h2>\n<ul class=\"warn\">\n";
  for (const std::string& w : h.warnings) s += "<li>" + EscapeXml(w) + "</li>\n";
  if (h.warnings_dropped > 0) {
    s += "<li>... and " + std::to_string(h.warnings_dropped) + " more</li>\n";
  }
  for (const std::string& n : f.notes) s += "<li>" + EscapeXml(n) + "</li>\n";
  return s + "</ul>\n";
}

// One series per stage of `value(record)` against the step.
template <typename F>
std::vector<Series> PerStage(const std::vector<proto::HistoryRecord>& steps, F value) {
  std::map<int, Series> by_stage;
  for (const proto::HistoryRecord& r : steps) {
    Series& s = by_stage[r.stage()];
    s.name = "stage " + std::to_string(r.stage());
    s.x.push_back(static_cast<double>(r.step()));
    s.y.push_back(value(r));
  }
  std::vector<Series> out;
  for (auto& [stage, s] : by_stage) out.push_back(std::move(s));
  return out;
}

// One loss plot per stage: a series per component ("total" first).
std::string LossPlots(const std::vector<proto::HistoryRecord>& steps) {
  std::map<int, std::set<std::string>> names;
  for (const proto::HistoryRecord& r : steps) {
    for (const auto& [name, v] : r.losses()) names[r.stage()].insert(name);
  }
  std::string html;
  for (const auto& [stage, stage_names] : names) {
    std::vector<std::string> order(stage_names.begin(), stage_names.end());
    std::stable_partition(order.begin(), order.end(),
                          [](const std::string& n) { return n == "total"; });
    std::vector<Series> series;
    for (const std::string& name : order) {
      Series s{name, {}, {}};
      for (const proto::HistoryRecord& r : steps) {
        if (r.stage() != stage) continue;
        auto it = r.losses().find(name);
        s.x.push_back(static_cast<double>(r.step()));
        s.y.push_back(it == r.losses().end() ? NAN : it->second);
      }
      series.push_back(std::move(s));
    }
    html +=
        RenderLinePlot(series, Options("Stage " + std::to_string(stage) + " loss", "step", "loss"));
  }
  return html;
}

std::string TrainingPlots(const History& h) {
  std::string s = "<h2>Training</h2>\n";
  if (h.steps.empty()) return s + "<p class=\"muted\">No training records.</p>\n";
  s += "<div class=\"plots\">\n" + LossPlots(h.steps);
  PlotOptions lr = Options("Learning rate", "step", "learning rate");
  lr.log_y = true;
  s += RenderLinePlot(PerStage(h.steps, [](const auto& r) { return r.lr(); }), lr);
  PlotOptions ips = Options("Images per second (all ranks)", "step", "images/s");
  ips.y_from_zero = true;
  s += RenderLinePlot(PerStage(h.steps, [](const auto& r) { return r.images_per_s(); }), ips);
  PlotOptions wait = Options("Data-wait share", "step", "share of the interval");
  wait.y_from_zero = true;
  s +=
      RenderLinePlot(PerStage(h.steps, [](const auto& r) { return r.data_wait_fraction(); }), wait);
  return s + "</div>\n";
}

std::string EvalSection(const History& h) {
  std::string s = "<h2>Evaluation</h2>\n";
  if (h.evals.empty()) return s + "<p class=\"muted\">No evaluations in the history.</p>\n";
  Series map{"mAP", {}, {}}, r1{"Rank-1", {}, {}};
  for (const proto::HistoryRecord& e : h.evals) {
    map.x.push_back(e.epoch());
    map.y.push_back(e.map());
    r1.x.push_back(e.epoch());
    r1.y.push_back(Cmc(e, 0));
  }
  PlotOptions o = Options("mAP and Rank-1 per evaluation", "epoch (stage 2)", "ratio");
  o.markers = true;
  o.y_from_zero = true;
  s += RenderLinePlot({map, r1}, o);
  s += "<table>\n<tr><th>stage</th><th>epoch</th><th>step</th><th>mAP</th><th>Rank-1</th>"
       "<th>Rank-5</th><th>Rank-10</th></tr>\n";
  const size_t first = h.evals.size() > kMaxEvalRows ? h.evals.size() - kMaxEvalRows : 0;
  for (size_t i = first; i < h.evals.size(); ++i) {
    const proto::HistoryRecord& e = h.evals[i];
    s += "<tr><td class=\"num\">" + std::to_string(e.stage()) + "</td><td class=\"num\">" +
         std::to_string(e.epoch()) + "</td><td class=\"num\">" + std::to_string(e.step()) +
         "</td><td class=\"num\">" + Percent(e.map()) + "</td><td class=\"num\">" +
         Percent(Cmc(e, 0)) + "</td><td class=\"num\">" + Percent(Cmc(e, 4)) +
         "</td><td class=\"num\">" + Percent(Cmc(e, 9)) + "</td></tr>\n";
  }
  return s + "</table>\n";
}

std::string GridAndConfig(const RunFiles& f) {
  std::string s;
  if (!f.grid_jpeg.empty()) {
    s += "<h2>Retrieval grid</h2>\n<p class=\"muted\">Each row: a query, then its best gallery "
         "matches (green: same identity, red: another).</p>\n<img class=\"grid\" alt=\"retrieval "
         "grid\" src=\"data:image/jpeg;base64," +
         Base64(f.grid_jpeg) + "\">\n";
  }
  s += "<h2>Effective config</h2>\n";
  if (f.config_text.empty()) return s + "<p class=\"muted\">No config.textproto.</p>\n";
  return s + "<pre>" + EscapeXml(f.config_text) + (f.config_truncated ? "\n[truncated]" : "") +
         "</pre>\n";
}

std::string Header(const RunFiles& f) {
  char when[64] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm) != nullptr) std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", &tm);
  return "<h1>reid run report</h1>\n<p>Run directory <code>" + EscapeXml(f.run_dir) +
         "</code>; written " + when + " by reid " + EscapeXml(base::Version()) + " (" +
         EscapeXml(base::GitSha()) + ").</p>\n";
}

}  // namespace

std::string RenderReportHtml(const RunFiles& files) {
  return kHead + Header(files) + Summary(files) + MetricsTable(files) + Warnings(files) +
         TrainingPlots(files.history) + EvalSection(files.history) + GridAndConfig(files) + kTail;
}

}  // namespace reid::report
