// Small inline-SVG line plots for the run report: a frame with "nice" ticks on both axes, a title,
// axis labels and a legend. Points that are not finite (NaN, inf; or <= 0 on a log axis) are left
// out as gaps, so bad numbers from a file never reach the SVG text; every string is XML-escaped.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace reid::report {

// One line of a plot: x[i], y[i] pairs (the shorter of the two decides the count).
struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
};

struct PlotOptions {
  std::string title;
  std::string x_label;
  std::string y_label;
  int width = 720;                          // pixels, legend column included
  int height = 300;                         // pixels
  bool log_y = false;                       // log10 y axis (non-positive values are left out)
  bool markers = false;                     // a dot on every point (few points, e.g. evaluations)
  bool y_from_zero = false;                 // the y range includes 0
  double y_fixed_min = 0, y_fixed_max = 0;  // a fixed y range when y_fixed_max > y_fixed_min
  size_t max_points_per_series = 2000;      // longer series are thinned (min and max per bucket)
};

// Text with & < > " ' replaced by entities: safe inside XML/HTML text and attribute values.
std::string EscapeXml(std::string_view text);

// Tick positions covering [lo, hi] with a step of 1, 2 or 5 times a power of ten, about
// `target_count` of them; empty when lo or hi is not finite or lo > hi.
std::vector<double> NiceTicks(double lo, double hi, int target_count);

// A tick label: as many decimals as `step` needs, scientific notation for very large or small
// magnitudes ("1.5e-05"); "0" for values within 1e-9 of a step of zero.
std::string FormatTick(double value, double step);

// The plot as one <svg class="plot"> element (no XML declaration: meant for inline HTML). With no
// finite point at all it draws the frame and "no data".
std::string RenderLinePlot(const std::vector<Series>& series, const PlotOptions& options);

using Point = std::pair<double, double>;  // (x, y)

// The drawable runs of `s`: maximal runs of finite points (a non-finite x or y, or y <= 0 with
// log_y, ends a run: a gap in the line), with at most about max_points points in all. A longer
// run is thinned to the minimum and maximum y of each bucket of consecutive points, so spikes stay
// visible. Exposed for tests.
std::vector<std::vector<Point>> DrawableRuns(const Series& s, size_t max_points, bool log_y);

}  // namespace reid::report
