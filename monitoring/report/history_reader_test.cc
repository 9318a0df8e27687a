// Tests of the history.jsonl reader: good records in both JSON name forms, bad lines reported by
// number and skipped, a huge line, an empty file, the line and memory bounds.
#include "monitoring/report/history_reader.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/status_test_util.h"

namespace reid::report {
namespace {

History Parse(const std::string& text, const HistoryLimits& limits = {}) {
  std::istringstream in(text);
  return ParseHistory(in, "h.jsonl", limits);
}

const char kStep[] = R"({"kind":"STEP","time":1700000000.5,"stage":2,"epoch":3,"step":120,)"
                     R"("losses":{"total":1.5,"id":0.7,"triplet":0.5,"i2t":0.3},"lr":5e-06,)"
                     R"("imagesPerS":310.5,"dataWaitFraction":0.03,"map":0,"cmc":[]})";
const char kEval[] = R"({"kind":"EVAL","time":1700000100,"stage":2,"epoch":10,"step":400,)"
                     R"("map":0.8,"cmc":[0.9,0.93,0.95]})";

TEST(HistoryReaderTest, ReadsStepAndEvalRecords) {
  const History h = Parse(std::string(kStep) + "\n" + kEval + "\n");
  ASSERT_EQ(h.steps.size(), 1u);
  ASSERT_EQ(h.evals.size(), 1u);
  EXPECT_EQ(h.step_records, 1);
  EXPECT_EQ(h.eval_records, 1);
  EXPECT_EQ(h.lines, 2);
  EXPECT_EQ(h.bad_lines, 0);
  EXPECT_TRUE(h.warnings.empty());
  EXPECT_EQ(h.steps[0].step(), 120);
  EXPECT_EQ(h.steps[0].losses().at("triplet"), 0.5);
  EXPECT_DOUBLE_EQ(h.steps[0].images_per_s(), 310.5);
  EXPECT_DOUBLE_EQ(h.steps[0].data_wait_fraction(), 0.03);
  EXPECT_DOUBLE_EQ(h.evals[0].map(), 0.8);
  EXPECT_DOUBLE_EQ(h.evals[0].cmc(0), 0.9);
}

// The writer's format (monitoring/, the spec of history.jsonl): MessageToJsonString with
// always_print_primitive_fields, so zero values and kind "STEP" are printed.
TEST(HistoryReaderTest, ReadsWhatTheWriterPrints) {
  proto::HistoryRecord step, eval;
  step.set_kind(proto::HistoryRecord::STEP);
  step.set_stage(1);
  step.set_step(0);
  (*step.mutable_losses())["total"] = 2.5;
  (*step.mutable_losses())["supcon"] = 2.5;
  eval.set_kind(proto::HistoryRecord::EVAL);
  eval.set_map(0.75);
  for (double c : {0.8, 0.9}) eval.add_cmc(c);
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string text, line;
  for (const proto::HistoryRecord* r : {&step, &eval}) {
    line.clear();
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(*r, &line, options).ok());
    text += line + "\n";
  }
  EXPECT_NE(text.find("\"kind\":\"STEP\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"imagesPerS\":0"), std::string::npos) << text;
  const History h = Parse(text);
  EXPECT_EQ(h.bad_lines, 0);
  ASSERT_EQ(h.steps.size(), 1u);
  ASSERT_EQ(h.evals.size(), 1u);
  EXPECT_EQ(h.steps[0].losses().at("supcon"), 2.5);
  EXPECT_EQ(h.evals[0].cmc(1), 0.9);
}

TEST(HistoryReaderTest, AcceptsProtoFieldNamesUnknownFieldsCrlfAndBlankLines) {
  const History h = Parse(
      "\r\n  "
      "\n{\"kind\":\"STEP\",\"step\":7,\"images_per_s\":12,\"future_field\":{\"a\":1}}\r\n\n");
  ASSERT_EQ(h.steps.size(), 1u);
  EXPECT_EQ(h.steps[0].step(), 7);
  EXPECT_EQ(h.steps[0].images_per_s(), 12);
  EXPECT_EQ(h.bad_lines, 0);
  EXPECT_EQ(h.lines, 4);
}

TEST(HistoryReaderTest, NonFiniteNumbersAreKeptAsValues) {
  const History h = Parse(R"({"kind":"STEP","step":1,"losses":{"total":"NaN"},"lr":"Infinity"})");
  ASSERT_EQ(h.steps.size(), 1u);
  EXPECT_TRUE(std::isnan(h.steps[0].losses().at("total")));
  EXPECT_TRUE(std::isinf(h.steps[0].lr()));
}

TEST(HistoryReaderTest, BadLinesAreSkippedAndReportedByLineNumber) {
  const History h = Parse(std::string(kStep) + "\n" +               // 1
                          "not json\n" +                            // 2
                          "[1,2,3]\n" +                             // 3
                          "{\"kind\":\"BOGUS\"}\n" +                // 4
                          "{\"step\":5}\n" +                        // 5: no kind
                          "{\"kind\":\"STEP\",\"step\":\"x\"}\n" +  // 6
                          "{\"kind\":\"STEP\"" +                    // 7: cut off
                          "\n" + kEval + "\n");                     // 8
  EXPECT_EQ(h.steps.size(), 1u);
  EXPECT_EQ(h.evals.size(), 1u);
  EXPECT_EQ(h.bad_lines, 6);
  ASSERT_EQ(h.warnings.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(h.warnings[i].rfind("h.jsonl:" + std::to_string(i + 2) + ": ", 0), 0u)
        << h.warnings[i];
    EXPECT_EQ(h.warnings[i].find('\n'), std::string::npos) << h.warnings[i];
  }
  EXPECT_NE(h.warnings[3].find("no \"kind\""), std::string::npos);
}

TEST(HistoryReaderTest, HugeLineIsSkippedAndTheNextOneRead) {
  const std::string huge = "{\"kind\":\"STEP\",\"pad\":\"" + std::string(200000, 'x') + "\"}";
  const History h = Parse(huge + "\n" + kStep + "\n");
  EXPECT_EQ(h.steps.size(), 1u);
  EXPECT_EQ(h.bad_lines, 1);
  ASSERT_EQ(h.warnings.size(), 1u);
  EXPECT_EQ(h.warnings[0], "h.jsonl:1: longer than 65536 bytes, skipped");
}

TEST(HistoryReaderTest, LineOfExactlyTheLimitIsRead) {
  std::string line = R"({"kind":"STEP","step":3})";
  HistoryLimits limits;
  limits.max_line_bytes = line.size();
  EXPECT_EQ(Parse(line + "\n" + line, limits).steps.size(), 2u);
  limits.max_line_bytes = line.size() - 1;
  EXPECT_EQ(Parse(line, limits).bad_lines, 1);
}

TEST(HistoryReaderTest, EmptyInput) {
  const History h = Parse("");
  EXPECT_TRUE(h.steps.empty());
  EXPECT_TRUE(h.evals.empty());
  EXPECT_EQ(h.lines, 0);
  EXPECT_TRUE(h.warnings.empty());
}

TEST(HistoryReaderTest, StopsAfterMaxLines) {
  HistoryLimits limits;
  limits.max_lines = 3;
  std::string text;
  for (int i = 0; i < 5; ++i) text += std::string(kStep) + "\n";
  const History h = Parse(text, limits);
  EXPECT_EQ(h.lines, 3);
  EXPECT_EQ(h.steps.size(), 3u);
  EXPECT_TRUE(h.truncated);
  ASSERT_EQ(h.warnings.size(), 1u);
  EXPECT_NE(h.warnings[0].find("h.jsonl:4: more than 3 lines"), std::string::npos);
}

TEST(HistoryReaderTest, LongHistoryIsThinnedEvenlyKeepingFirstAndLast) {
  HistoryLimits limits;
  limits.max_kept_records = 10;
  std::string text;
  for (int i = 0; i < 1001; ++i) text += "{\"kind\":\"STEP\",\"step\":" + std::to_string(i) + "}\n";
  const History h = Parse(text, limits);
  EXPECT_EQ(h.step_records, 1001);
  EXPECT_LE(h.steps.size(), 21u);
  EXPECT_GE(h.steps.size(), 10u);
  EXPECT_EQ(h.steps.front().step(), 0);
  EXPECT_EQ(h.steps.back().step(), 1000);
  const int64_t stride = h.steps[1].step() - h.steps[0].step();
  for (size_t i = 1; i + 1 < h.steps.size(); ++i) {
    EXPECT_EQ(h.steps[i].step() - h.steps[i - 1].step(), stride);
  }
}

TEST(HistoryReaderTest, BoundsLossNamesAndWarnings) {
  std::string losses;
  for (int i = 0; i < 40; ++i) losses += (i ? "," : "") + ("\"l" + std::to_string(i) + "\":1");
  std::string text = "{\"kind\":\"STEP\",\"losses\":{" + losses + "}}\n";
  for (int i = 0; i < 100; ++i) text += "bad\n";
  const History h = Parse(text);
  ASSERT_EQ(h.steps.size(), 1u);
  EXPECT_EQ(h.steps[0].losses_size(), 16);
  EXPECT_NE(h.warnings[0].find("24 loss name(s) beyond the first 16"), std::string::npos);
  EXPECT_EQ(h.warnings.size(), 50u);
  EXPECT_EQ(h.warnings_dropped, 51);
  EXPECT_EQ(h.bad_lines, 100);
}

TEST(HistoryReaderTest, PrintableOneLine) {
  EXPECT_EQ(PrintableOneLine("a\nb\x1b[31m\r\n c\xc3\xa9", 100), "a b [31m c");
  EXPECT_EQ(PrintableOneLine("abcdef", 3), "abc");
}

TEST(HistoryReaderTest, ReadHistoryNamesMissingAndOddPaths) {
  StatusOr<History> missing = ReadHistory("/nonexistent/history.jsonl");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/history.jsonl: not found"),
            std::string::npos);
  StatusOr<History> dir = ReadHistory("/tmp");
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().exit_code(), 2);

  char path[] = "/tmp/history_reader_test.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << kStep << "\n" << kEval << "\n";
  StatusOr<History> h = ReadHistory(path);
  std::remove(path);
  ASSERT_OK(h);
  EXPECT_EQ(h->steps.size(), 1u);
  EXPECT_EQ(h->evals.size(), 1u);
}

}  // namespace
}  // namespace reid::report
