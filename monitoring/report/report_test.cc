// Tests of the run report: the page from a run directory (plots, tables, grid, config), escaping
// of hostile strings, no external reference, and the user errors for a missing directory or file.
#include "monitoring/report/report.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/status_test_util.h"
#include "monitoring/report/test_util.h"

namespace reid::report {
namespace {

using ::reid::report::testing::Count;

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/report_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name, std::ios::binary) << text;
  }
  std::string Read(const std::string& name) {
    std::ifstream in(dir_ + "/" + name, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  // A small history of both stages with two evaluations and one bad line.
  void WriteRun() {
    std::string h;
    for (int i = 0; i < 5; ++i) {
      h += "{\"kind\":\"STEP\",\"time\":" + std::to_string(1000 + i) +
           ",\"stage\":1,\"epoch\":1,\"step\":" + std::to_string(10 * i) +
           ",\"losses\":{\"total\":" + std::to_string(3.0 - 0.1 * i) +
           ",\"supcon\":" + std::to_string(3.0 - 0.1 * i) +
           "},\"lr\":1e-4,\"imagesPerS\":300,"
           "\"dataWaitFraction\":0.1}\n";
    }
    h += "garbage line\n";
    for (int i = 5; i < 10; ++i) {
      h += "{\"kind\":\"STEP\",\"time\":" + std::to_string(1000 + i) +
           ",\"stage\":2,\"epoch\":1,\"step\":" + std::to_string(10 * i) +
           ",\"losses\":{\"total\":2,\"id\":1,\"triplet\":0.5,\"i2t\":\"NaN\","
           "\"<script>alert(1)</script>\":1},\"lr\":5e-6,\"imagesPerS\":310,"
           "\"dataWaitFraction\":0.02}\n";
    }
    h += "{\"kind\":\"EVAL\",\"stage\":2,\"epoch\":1,\"step\":70,\"map\":0.5,\"cmc\":[0.6,0.7]}\n";
    h += "{\"kind\":\"EVAL\",\"stage\":2,\"epoch\":2,\"step\":90,\"map\":0.6,\"cmc\":[0.7,0.8]}\n";
    Write(kHistoryFile, h);
    Write(kMetricsFile,
          "{\"mAP\":0.6,\"cmc\":[0.7,0.8,0.85,0.9,0.91],\"num_valid_queries\":40,"
          "\"num_query\":40,\"num_gallery\":200,\"stage\":2,\"epoch\":2}\n");
    Write(kConfigFile, "name: \"</pre><script>alert(2)</script>\"\nseed: 1\n");
    Write(kRetrievalGridFile, std::string("\xFF\xD8\xFF\xE0", 4) + "fake jpeg");
  }
  std::string dir_;
};

TEST_F(ReportTest, WritesASelfContainedPageWithEveryPart) {
  WriteRun();
  ReportInfo info;
  const Status s = WriteRunReport(dir_, &info);
  ASSERT_OK(s);
  EXPECT_EQ(info.path, dir_ + "/report.html");
  EXPECT_EQ(info.step_records, 10);
  EXPECT_EQ(info.eval_records, 2);
  EXPECT_EQ(info.bad_lines, 1);
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_NE(info.warnings[0].find("history.jsonl:6: "), std::string::npos);

  const std::string html = Read("report.html");
  // Plots: a loss plot per stage, lr, images/s, data wait, mAP/R1.
  EXPECT_EQ(Count(html, "<svg class=\"plot\""), 6);
  EXPECT_GE(Count(html, "<polyline"), 2 + 3 + 2 + 2 + 2 + 2);
  EXPECT_NE(html.find(">Stage 1 loss</text>"), std::string::npos);
  EXPECT_NE(html.find(">Stage 2 loss</text>"), std::string::npos);
  EXPECT_NE(html.find(">mAP and Rank-1 per evaluation</text>"), std::string::npos);
  EXPECT_NE(html.find("<th>mAP</th><td>60.00%</td>"), std::string::npos);
  EXPECT_NE(html.find("<th>Rank-5</th><td>91.00%</td>"), std::string::npos);
  EXPECT_NE(html.find("src=\"data:image/jpeg;base64,/9j/4GZha2UganBlZw==\""), std::string::npos);
  EXPECT_NE(html.find("seed: 1"), std::string::npos);
  // Hostile strings are text, never markup; only our own script is on the page.
  EXPECT_EQ(Count(html, "<script"), 1);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;/pre&gt;&lt;script&gt;alert(2)"), std::string::npos);
  // Self-contained: nothing to fetch.
  EXPECT_EQ(html.find("://"), std::string::npos);
  EXPECT_EQ(html.find(" href="), std::string::npos);
  EXPECT_EQ(Count(html, " src="), 1);  // the grid's data: URI
  EXPECT_EQ(html.find("nan\""), std::string::npos);
  // No temporary file left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += !e.is_directory();
  EXPECT_EQ(files, 5);
}

TEST_F(ReportTest, OnlyAHistoryIsEnough) {
  Write(kHistoryFile, "{\"kind\":\"STEP\",\"stage\":1,\"step\":1,\"losses\":{\"total\":1}}\n");
  ASSERT_OK(WriteRunReport(dir_));
  const std::string html = Read("report.html");
  EXPECT_NE(html.find("No metrics.json"), std::string::npos);
  EXPECT_NE(html.find("No evaluations in the history"), std::string::npos);
  EXPECT_NE(html.find("No config.textproto"), std::string::npos);
  EXPECT_EQ(html.find("data:image"), std::string::npos);
}

TEST_F(ReportTest, EmptyHistoryStillWritesAPage) {
  Write(kHistoryFile, "");
  ASSERT_OK(WriteRunReport(dir_));
  EXPECT_NE(Read("report.html").find("No training records"), std::string::npos);
}

TEST_F(ReportTest, BadOptionalFilesAreNotesNotErrors) {
  Write(kHistoryFile, "");
  Write(kMetricsFile, "[not an object");
  Write(kRetrievalGridFile, "GIF89a");
  ReportInfo info;
  ASSERT_OK(WriteRunReport(dir_, &info));
  ASSERT_EQ(info.warnings.size(), 2u);
  EXPECT_NE(info.warnings[0].find("metrics.json: not a JSON object"), std::string::npos);
  EXPECT_NE(info.warnings[1].find("retrieval_grid.jpg: not a JPEG file"), std::string::npos);
  const std::string html = Read("report.html");
  EXPECT_NE(html.find("not a JPEG file"), std::string::npos);
  EXPECT_EQ(html.find("data:image"), std::string::npos);
}

// A directory (or FIFO) where report.html goes is a user error naming it, and nothing is left
// behind; FIFOs and directories in place of the optional files are notes, never a hang.
TEST_F(ReportTest, ReportPathInTheWayAndOddOptionalFiles) {
  Write(kHistoryFile, "");
  std::filesystem::create_directory(dir_ + "/" + kReportFile);
  Status s = WriteRunReport(dir_);
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_EQ(s.message(),
            dir_ + "/report.html: exists and is not a regular file (a directory)");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += !e.is_directory();
  EXPECT_EQ(files, 1);  // history.jsonl only: no temporary file
  std::filesystem::remove(dir_ + "/" + kReportFile);
  ASSERT_EQ(mkfifo((dir_ + "/" + kMetricsFile).c_str(), 0600), 0);
  ASSERT_EQ(mkfifo((dir_ + "/" + kRetrievalGridFile).c_str(), 0600), 0);
  std::filesystem::create_directory(dir_ + "/" + kConfigFile);
  ReportInfo info;
  ASSERT_OK(WriteRunReport(dir_, &info));
  ASSERT_EQ(info.warnings.size(), 3u);
  EXPECT_EQ(info.warnings[0], dir_ + "/metrics.json: not a regular file (a FIFO), not shown");
  EXPECT_EQ(info.warnings[1],
            dir_ + "/config.textproto: not a regular file (a directory), not shown");
  EXPECT_EQ(info.warnings[2],
            dir_ + "/retrieval_grid.jpg: not a regular file (a FIFO), not shown");
  // A FIFO as the history is refused, not waited on.
  std::filesystem::remove(dir_ + "/" + kHistoryFile);
  ASSERT_EQ(mkfifo((dir_ + "/" + kHistoryFile).c_str(), 0600), 0);
  s = WriteRunReport(dir_);
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_EQ(s.message(), dir_ + "/history.jsonl: not a regular file (a FIFO)");
}

TEST_F(ReportTest, MissingDirectoryOrHistoryIsAUserError) {
  Status s = WriteRunReport(dir_ + "/nope");
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_NE(s.message().find("--run_dir=" + dir_ + "/nope: no such directory"), std::string::npos);
  s = WriteRunReport(dir_);
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_NE(s.message().find(dir_ + "/history.jsonl: not found"), std::string::npos);
  EXPECT_EQ(WriteRunReport("").exit_code(), 2);
}

TEST(ParseMetricsJsonTest, KnownKeysAndMissingOnes) {
  StatusOr<MetricsSummary> m = ParseMetricsJson(
      R"({"mAP":0.5,"cmc":[0.6,"x"],"num_query":3,"rerank":true,"stage":"2"})", "m.json");
  ASSERT_OK(m);
  EXPECT_EQ(m->map, 0.5);
  ASSERT_EQ(m->cmc.size(), 2u);
  EXPECT_EQ(m->cmc[0], 0.6);
  EXPECT_TRUE(std::isnan(m->cmc[1]));
  EXPECT_EQ(m->num_query, 3);
  EXPECT_TRUE(std::isnan(m->num_gallery));
  EXPECT_TRUE(std::isnan(m->stage));  // a string, not a number
  EXPECT_FALSE(ParseMetricsJson("3", "m.json").ok());
  EXPECT_NE(ParseMetricsJson("{", "m.json").status().message().find("m.json: "), std::string::npos);
}

}  // namespace
}  // namespace reid::report
