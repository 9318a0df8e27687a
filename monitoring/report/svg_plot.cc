// Inline-SVG line plots for the run report (see svg_plot.h).
#include "monitoring/report/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace reid::report {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kLegendWidth = 160, kLeft = 70, kRight = 14, kTop = 30, kBottom = 46;
constexpr size_t kMaxLegendEntries = 12, kMaxLegendChars = 24;
constexpr int kMaxTicks = 50;

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

// A pixel coordinate: always finite and within a sane range.
std::string Px(double v) {
  if (!std::isfinite(v)) v = 0;
  return Fmt("%.1f", std::clamp(v, -1e5, 1e5));
}

// The first `max_chars` characters of UTF-8 text (never cut inside a character), "..." if cut.
std::string Shorten(const std::string& text, size_t max_chars) {
  size_t chars = 0, i = 0;
  for (; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80 && chars++ == max_chars) break;
  }
  return i < text.size() ? text.substr(0, i) + "..." : text;
}

bool Drawable(double x, double y, bool log_y) {
  return std::isfinite(x) && std::isfinite(y) && (!log_y || y > 0);
}

// Keeps the min-y and max-y points (in their order) of each of `buckets` slices of `run`.
std::vector<Point> ThinRun(const std::vector<Point>& run, size_t buckets) {
  std::vector<Point> out;
  const size_t size = (run.size() + buckets - 1) / buckets;
  for (size_t start = 0; start < run.size(); start += size) {
    const size_t end = std::min(run.size(), start + size);
    size_t lo = start, hi = start;
    for (size_t i = start; i < end; ++i) {
      if (run[i].second < run[lo].second) lo = i;
      if (run[i].second > run[hi].second) hi = i;
    }
    out.push_back(run[std::min(lo, hi)]);
    if (lo != hi) out.push_back(run[std::max(lo, hi)]);
  }
  return out;
}

// A linear map from [lo, hi] to [p0, p1] that cannot overflow for any finite lo < hi.
struct Axis {
  double lo = 0, hi = 1, p0 = 0, p1 = 1;
  std::vector<double> ticks;
  double step = 1;
  double Map(double v) const {
    const double t = (v / 2 - lo / 2) / (hi / 2 - lo / 2);
    return p0 + (std::isfinite(t) ? t : 0) * (p1 - p0);
  }
};

// The axis over [lo, hi] (data values, or log10 of them), widened to whole ticks.
Axis MakeAxis(double lo, double hi, double p0, double p1, int target_ticks) {
  if (!(lo < hi)) {
    const double pad = std::isfinite(lo) && lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo = std::isfinite(lo) ? lo - pad : -1;
    hi = std::isfinite(hi) ? hi + pad : 1;
  }
  Axis a;
  a.p0 = p0;
  a.p1 = p1;
  a.ticks = NiceTicks(lo, hi, target_ticks);
  if (a.ticks.size() >= 2) {
    a.step = a.ticks[1] - a.ticks[0];
    lo = std::min(lo, a.ticks.front());
    hi = std::max(hi, a.ticks.back());
  } else {
    a.ticks = {lo, hi};
    a.step = std::fabs(hi / 2 - lo / 2);
  }
  a.lo = lo;
  a.hi = hi;
  return a;
}

// Ticks of a log10 axis spanning two decades or more at whole powers of ten only.
void UseWholeDecades(Axis* a) {
  const double lo = std::floor(a->lo), hi = std::ceil(a->hi);
  const double step = std::max(1.0, std::ceil((hi - lo) / 6));
  a->ticks.clear();
  for (double t = lo; t <= hi + 1e-9 && a->ticks.size() < static_cast<size_t>(kMaxTicks);
       t += step) {
    a->ticks.push_back(t);
  }
  a->lo = lo;
  a->hi = std::max(hi, a->ticks.back());
  a->step = step;
}

struct Range {
  double lo = INFINITY, hi = -INFINITY;
  void Add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

std::string Text(double x, double y, const std::string& text, const char* extra) {
  return "<text x=\"" + Px(x) + "\" y=\"" + Px(y) + "\"" + extra + ">" + EscapeXml(text) +
         "</text>\n";
}

std::string Line(double x1, double y1, double x2, double y2, const char* style) {
  return "<line x1=\"" + Px(x1) + "\" y1=\"" + Px(y1) + "\" x2=\"" + Px(x2) + "\" y2=\"" + Px(y2) +
         "\" " + style + "/>\n";
}

// Grid lines and tick labels of both axes, the frame and the axis labels.
std::string DrawAxes(const Axis& x, const Axis& y, bool log_y, const PlotOptions& o) {
  std::string svg = "<g class=\"axes\" font-size=\"11\" fill=\"#333\">\n";
  for (double t : x.ticks) {
    const double px = x.Map(t);
    svg += Line(px, y.p0, px, y.p1, "stroke=\"#e5e5e5\"");
    svg += Text(px, y.p0 + 15, FormatTick(t, x.step), " text-anchor=\"middle\"");
  }
  for (double t : y.ticks) {
    const double py = y.Map(t);
    svg += Line(x.p0, py, x.p1, py, "stroke=\"#e5e5e5\"");
    const std::string label =
        log_y ? FormatTick(std::pow(10.0, t), std::pow(10.0, t)) : FormatTick(t, y.step);
    svg += Text(x.p0 - 5, py + 4, label, " text-anchor=\"end\"");
  }
  svg += "<rect x=\"" + Px(x.p0) + "\" y=\"" + Px(y.p1) + "\" width=\"" + Px(x.p1 - x.p0) +
         "\" height=\"" + Px(y.p0 - y.p1) + "\" fill=\"none\" stroke=\"#555\"/>\n";
  svg += Text((x.p0 + x.p1) / 2, y.p0 + 34, o.x_label, " text-anchor=\"middle\"");
  const std::string ty = Px((y.p0 + y.p1) / 2);
  svg += "<text x=\"14\" y=\"" + ty + "\" text-anchor=\"middle\" transform=\"rotate(-90 14 " + ty +
         ")\">" + EscapeXml(o.y_label + (log_y ? " (log scale)" : "")) + "</text>\n";
  return svg + "</g>\n";
}

std::string DrawRun(const std::vector<Point>& run, const Axis& x, const Axis& y, bool log_y,
                    const char* color, bool markers) {
  std::string svg;
  auto px = [&](const Point& p) { return Px(x.Map(p.first)); };
  auto py = [&](const Point& p) { return Px(y.Map(log_y ? std::log10(p.second) : p.second)); };
  if (run.size() >= 2) {
    svg += "<polyline fill=\"none\" stroke=\"" + std::string(color) +
           "\" stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < run.size(); ++i) svg += (i ? " " : "") + px(run[i]) + "," + py(run[i]);
    svg += "\"/>\n";
  }
  if (markers || run.size() == 1) {
    for (const Point& p : run) {
      svg +=
          "<circle cx=\"" + px(p) + "\" cy=\"" + py(p) + "\" r=\"2.5\" fill=\"" + color + "\"/>\n";
    }
  }
  return svg;
}

std::string DrawLegend(const std::vector<Series>& series, double x0, double y0) {
  std::string svg = "<g class=\"legend\" font-size=\"11\" fill=\"#333\">\n";
  for (size_t i = 0; i < series.size() && i < kMaxLegendEntries; ++i) {
    const double y = y0 + 16.0 * static_cast<double>(i);
    const std::string style = std::string("stroke=\"") + kPalette[i % 10] + "\" stroke-width=\"3\"";
    svg += Line(x0, y, x0 + 18, y, style.c_str());
    svg += Text(x0 + 24, y + 4, Shorten(series[i].name, kMaxLegendChars), "");
  }
  if (series.size() > kMaxLegendEntries) {
    svg += Text(x0, y0 + 16.0 * kMaxLegendEntries + 4,
                "+" + std::to_string(series.size() - kMaxLegendEntries) + " more", "");
  }
  return svg + "</g>\n";
}

}  // namespace

std::string EscapeXml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int target_count) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi || target_count < 1) return {};
  const double raw = (hi / 2 - lo / 2) * 2 / target_count;
  if (!std::isfinite(raw) || raw <= 0) {
    return lo == hi ? std::vector<double>{lo} : std::vector<double>{};
  }
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double frac = raw / mag;
  const double step = (frac < 1.5 ? 1 : frac < 3 ? 2 : frac < 7 ? 5 : 10) * mag;
  const double start = std::floor(lo / step) * step, end = std::ceil(hi / step) * step;
  const double count = std::round((end - start) / step) + 1;
  if (!std::isfinite(step) || step <= 0 || !std::isfinite(count) || count > kMaxTicks) return {};
  std::vector<double> ticks;
  for (int i = 0; i < static_cast<int>(count); ++i) {
    const double t = start + i * step;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string FormatTick(double value, double step) {
  if (!std::isfinite(value)) return "?";
  step = std::fabs(step);
  if (std::fabs(value) < step * 1e-9 || value == 0) return "0";
  const double magnitude = std::max(std::fabs(value), step);
  if (magnitude >= 1e6 || magnitude < 1e-3 || (step > 0 && step < 1e-4)) {
    return Fmt("%.3g", value);
  }
  int decimals = step > 0 ? static_cast<int>(std::ceil(-std::log10(step) - 1e-9)) : 3;
  decimals = std::clamp(decimals, 0, 6);
  char format[16];
  std::snprintf(format, sizeof(format), "%%.%df", decimals);
  return Fmt(format, value);
}

std::vector<std::vector<Point>> DrawableRuns(const Series& s, size_t max_points, bool log_y) {
  std::vector<std::vector<Point>> runs(1);
  size_t total = 0;
  const size_t n = std::min(s.x.size(), s.y.size());
  for (size_t i = 0; i < n; ++i) {
    if (Drawable(s.x[i], s.y[i], log_y)) {
      runs.back().emplace_back(s.x[i], s.y[i]);
      ++total;
    } else if (!runs.back().empty()) {
      runs.emplace_back();
    }
  }
  if (runs.back().empty()) runs.pop_back();
  if (total <= max_points || max_points < 2) return runs;
  for (std::vector<Point>& run : runs) {
    const size_t budget = std::max<size_t>(2, max_points * run.size() / total);
    if (run.size() > budget) run = ThinRun(run, budget / 2);
  }
  return runs;
}

std::string RenderLinePlot(const std::vector<Series>& series, const PlotOptions& o) {
  const int width = std::clamp(o.width, 200, 4000), height = std::clamp(o.height, 120, 4000);
  std::vector<std::vector<std::vector<Point>>> runs;
  Range xr, yr;
  for (const Series& s : series) {
    runs.push_back(DrawableRuns(s, o.max_points_per_series, o.log_y));
    for (const auto& run : runs.back()) {
      for (const Point& p : run) {
        xr.Add(p.first);
        yr.Add(o.log_y ? std::log10(p.second) : p.second);
      }
    }
  }
  if (o.y_from_zero && !yr.empty() && !o.log_y) yr.Add(0);
  if (o.y_fixed_max > o.y_fixed_min) yr = {o.y_fixed_min, o.y_fixed_max};
  const double plot_right = width - kRight - kLegendWidth;
  const Axis x = MakeAxis(xr.empty() ? 0 : xr.lo, xr.empty() ? 1 : xr.hi, kLeft, plot_right, 7);
  Axis y = MakeAxis(yr.empty() ? 0 : yr.lo, yr.empty() ? 1 : yr.hi, height - kBottom, kTop, 5);
  if (o.log_y && y.hi - y.lo >= 2) UseWholeDecades(&y);

  std::string svg = "<svg class=\"plot\" width=\"" + std::to_string(width) + "\" height=\"" +
                    std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " +
                    std::to_string(height) + "\" role=\"img\" aria-label=\"" + EscapeXml(o.title) +
                    "\" font-family=\"sans-serif\">\n";
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  svg += Text(kLeft, 18, o.title, " font-size=\"14\" font-weight=\"bold\"");
  svg += DrawAxes(x, y, o.log_y, o);
  svg += "<g class=\"series\">\n";
  for (size_t i = 0; i < runs.size(); ++i) {
    for (const auto& run : runs[i]) svg += DrawRun(run, x, y, o.log_y, kPalette[i % 10], o.markers);
  }
  svg += "</g>\n";
  if (xr.empty())
    svg += Text((kLeft + plot_right) / 2, height / 2.0, "no data",
                " text-anchor=\"middle\" fill=\"#999\"");
  svg += DrawLegend(series, plot_right + 12, kTop + 8);
  return svg + "</svg>\n";
}

}  // namespace reid::report
