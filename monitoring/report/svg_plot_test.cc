// Tests of the SVG line-plot helper: ticks, labels, gaps for bad numbers, escaping, thinning.
#include "monitoring/report/svg_plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "monitoring/report/test_util.h"

namespace reid::report {
namespace {

using ::reid::report::testing::Count;

// Every number in the SVG's coordinate attributes is finite (no nan/inf made it through).
void ExpectFiniteCoordinates(const std::string& svg) {
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
  const std::regex attr(R"(\s(?:x|y|x1|x2|y1|y2|cx|cy|points)="([^"]*)\")");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), attr); it != std::sregex_iterator();
       ++it) {
    const std::string value = (*it)[1];
    for (const char c : value) {
      EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ',' ||
                  c == ' ' || c == '%')
          << "attribute value '" << value << "'";
    }
  }
}

TEST(EscapeXmlTest, EscapesTheFiveSpecialCharacters) {
  EXPECT_EQ(EscapeXml("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(EscapeXml("plain ü"), "plain ü");
}

TEST(NiceTicksTest, StepsOfOneTwoOrFive) {
  EXPECT_EQ(NiceTicks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6000000000000001, 0.8, 1}));
  const std::vector<double> t = NiceTicks(3, 97, 5);
  ASSERT_GE(t.size(), 2u);
  EXPECT_EQ(t.front(), 0);
  EXPECT_EQ(t.back(), 100);
  EXPECT_EQ(t[1] - t[0], 20);
  EXPECT_EQ(NiceTicks(-0.3, 0.3, 6)[3], 0.0);  // exactly 0, not -5.55e-17
}

TEST(NiceTicksTest, BadRangesGiveNoTicks) {
  EXPECT_TRUE(NiceTicks(NAN, 1, 5).empty());
  EXPECT_TRUE(NiceTicks(0, INFINITY, 5).empty());
  EXPECT_TRUE(NiceTicks(2, 1, 5).empty());
  EXPECT_LE(NiceTicks(-1e308, 1e308, 5).size(), 50u);
  EXPECT_EQ(NiceTicks(4, 4, 5), std::vector<double>{4});
}

TEST(FormatTickTest, DecimalsFollowTheStep) {
  EXPECT_EQ(FormatTick(0.4, 0.2), "0.4");
  EXPECT_EQ(FormatTick(1000, 200), "1000");
  EXPECT_EQ(FormatTick(0.25, 0.05), "0.25");
  EXPECT_EQ(FormatTick(1e-12, 0.2), "0");
  EXPECT_EQ(FormatTick(1.5e-5, 5e-6), "1.5e-05");
  EXPECT_EQ(FormatTick(2.5e7, 5e6), "2.5e+07");
  EXPECT_EQ(FormatTick(NAN, 1), "?");
}

TEST(RenderLinePlotTest, AxesTitleLabelsAndLegend) {
  Series a{"total", {0, 10, 20, 30}, {2.0, 1.5, 1.2, 1.0}};
  Series b{"id", {0, 10, 20, 30}, {1.0, 0.8, 0.7, 0.6}};
  PlotOptions o{"Stage 2 loss", "step", "loss"};
  const std::string svg = RenderLinePlot({a, b}, o);
  EXPECT_EQ(svg.rfind("<svg class=\"plot\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(Count(svg, "<polyline"), 2);
  EXPECT_NE(svg.find(">Stage 2 loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">total</text>"), std::string::npos);  // legend
  EXPECT_NE(svg.find(">id</text>"), std::string::npos);
  EXPECT_NE(svg.find(">30</text>"), std::string::npos);   // an x tick
  EXPECT_NE(svg.find(">0.6</text>"), std::string::npos);  // a y tick
  ExpectFiniteCoordinates(svg);
}

TEST(RenderLinePlotTest, NonFiniteValuesAreGaps) {
  Series s{"loss", {0, 1, 2, 3, 4, 5, INFINITY}, {1, 2, NAN, 4, 5, -INFINITY, 7}};
  const std::string svg = RenderLinePlot({s}, PlotOptions{"t", "x", "y"});
  EXPECT_EQ(Count(svg, "<polyline"), 2);  // (0,1)-(1,2) and (3,4)-(4,5)
  ExpectFiniteCoordinates(svg);
}

TEST(RenderLinePlotTest, NoFinitePointDrawsAnEmptyFrame) {
  Series s{"loss", {0, 1}, {NAN, NAN}};
  const std::string svg = RenderLinePlot({s}, PlotOptions{"t", "x", "y"});
  EXPECT_EQ(Count(svg, "<polyline"), 0);
  EXPECT_NE(svg.find(">no data</text>"), std::string::npos);
  EXPECT_NE(RenderLinePlot({}, PlotOptions{}).find("no data"), std::string::npos);
  ExpectFiniteCoordinates(svg);
}

TEST(RenderLinePlotTest, ExtremeValuesStayFinite) {
  Series s{"big", {-1e308, 0, 1e308}, {1e308, -1e308, 5e-324}};
  const std::string svg = RenderLinePlot({s}, PlotOptions{"t", "x", "y"});
  EXPECT_EQ(Count(svg, "<polyline"), 1);
  ExpectFiniteCoordinates(svg);
}

TEST(RenderLinePlotTest, LogAxisLeavesOutNonPositiveValues) {
  Series s{"lr", {0, 1, 2, 3}, {1e-5, 0, 1e-4, 1e-3}};
  PlotOptions o{"Learning rate", "step", "lr"};
  o.log_y = true;
  const std::string svg = RenderLinePlot({s}, o);
  EXPECT_EQ(Count(svg, "<polyline"), 1);  // (2, 1e-4)-(3, 1e-3); (0, 1e-5) alone: a dot
  EXPECT_EQ(Count(svg, "<circle"), 1);
  EXPECT_NE(svg.find("(log scale)"), std::string::npos);
  EXPECT_NE(svg.find(">0.0001</text>"), std::string::npos);
  ExpectFiniteCoordinates(svg);
}

TEST(RenderLinePlotTest, EscapesEveryString) {
  Series s{"<script>alert(1)</script>", {0, 1}, {0, 1}};
  PlotOptions o{"a & b", "\"x\"", "<y>"};
  const std::string svg = RenderLinePlot({s}, o);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_NE(svg.find("&lt;script&gt;"), std::string::npos);
  EXPECT_NE(svg.find("a &amp; b"), std::string::npos);
  EXPECT_NE(svg.find("&quot;x&quot;"), std::string::npos);
}

TEST(RenderLinePlotTest, LongLegendNamesAreShortenedOnCharacterBoundaries) {
  Series s{std::string(30, 'a') + "ééé", {0, 1}, {0, 1}};
  Series t{"üüüüüüüüüüüüüüüüüüüüüüüüüüüü", {0, 1}, {0, 1}};
  const std::string svg = RenderLinePlot({s, t}, PlotOptions{});
  EXPECT_NE(svg.find(std::string(24, 'a') + "...<"), std::string::npos);
  std::string u24;
  for (int i = 0; i < 24; ++i) u24 += "ü";
  EXPECT_NE(svg.find(">" + u24 + "...<"), std::string::npos);
}

TEST(DrawableRunsTest, ThinningKeepsSpikesAndBoundsThePoints) {
  Series s{"loss", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    s.x.push_back(i);
    s.y.push_back(i == 54321 ? 1000.0 : 1.0 + 0.001 * (i % 7));
  }
  const auto runs = DrawableRuns(s, 2000, false);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_LE(runs[0].size(), 2002u);
  EXPECT_GE(runs[0].size(), 1000u);
  bool spike = false;
  for (const Point& p : runs[0]) spike |= (p.first == 54321 && p.second == 1000.0);
  EXPECT_TRUE(spike);
  for (size_t i = 1; i < runs[0].size(); ++i) EXPECT_LT(runs[0][i - 1].first, runs[0][i].first);
}

TEST(DrawableRunsTest, MismatchedLengthsUseTheShorter) {
  Series s{"x", {0, 1, 2, 3}, {1, 2}};
  const auto runs = DrawableRuns(s, 100, false);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].size(), 2u);
}

}  // namespace
}  // namespace reid::report
