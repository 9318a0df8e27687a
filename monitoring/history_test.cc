// history.jsonl: the JSON form `reid report` reads, appended across runs, one record per line.
#include "monitoring/history.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/status_test_util.h"

namespace reid::monitoring {
namespace {

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string TempPath(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("reid_history_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / name).string();
  std::filesystem::remove(path);
  return path;
}

proto::HistoryRecord StepRecord() {
  proto::HistoryRecord r;
  r.set_time(1.7e9);
  r.set_stage(2);
  r.set_epoch(3);
  r.set_step(40);
  (*r.mutable_losses())["total"] = 1.25;
  (*r.mutable_losses())["id"] = 0.5;
  r.set_lr(5e-6);
  r.set_images_per_s(310);
  r.set_data_wait_fraction(0);
  return r;
}

TEST(HistoryTest, JsonHasEveryKeyInCamelCase) {
  const std::string json = HistoryRecordJson(StepRecord());
  EXPECT_EQ(json.find('\n'), std::string::npos);
  for (const char* key :
       {"\"kind\":\"STEP\"", "\"time\":", "\"stage\":2", "\"epoch\":3", "\"step\":\"40\"",
        "\"losses\":{", "\"total\":1.25", "\"lr\":", "\"imagesPerS\":310", "\"dataWaitFraction\":0",
        "\"map\":0", "\"cmc\":[]"}) {
    EXPECT_NE(json.find(key), std::string::npos) << key << " in " << json;
  }
}

TEST(HistoryTest, AppendsAcrossOpensAndRoundTrips) {
  const std::string path = TempPath("history.jsonl");
  {
    auto w = HistoryWriter::Open(path);
    ASSERT_OK(w);
    ASSERT_OK((*w)->Append(StepRecord()));
  }
  {
    auto w = HistoryWriter::Open(path);  // a resumed run appends
    ASSERT_OK(w);
    proto::HistoryRecord eval;
    eval.set_kind(proto::HistoryRecord::EVAL);
    eval.set_map(0.75);
    for (double c : {0.8, 0.9, 0.95}) eval.add_cmc(c);
    ASSERT_OK((*w)->Append(eval));
  }
  const auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  proto::HistoryRecord step, eval;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[0], &step, options).ok());
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[1], &eval, options).ok());
  EXPECT_EQ(step.kind(), proto::HistoryRecord::STEP);
  EXPECT_EQ(step.step(), 40);
  EXPECT_EQ(step.losses().at("total"), 1.25);
  EXPECT_EQ(eval.kind(), proto::HistoryRecord::EVAL);
  EXPECT_EQ(eval.map(), 0.75);
  EXPECT_EQ(eval.cmc_size(), 3);
}

TEST(HistoryTest, CutLineOfAKilledRunStaysOnItsOwnLine) {
  const std::string path = TempPath("cut.jsonl");
  std::ofstream(path) << "{\"kind\":\"STEP\",\"ti";  // killed mid-write
  {
    auto w = HistoryWriter::Open(path);
    ASSERT_OK(w);
    ASSERT_OK((*w)->Append(StepRecord()));
  }
  const auto lines = Lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "{\"kind\":\"STEP\",\"ti");
  proto::HistoryRecord back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(lines[1], &back).ok()) << lines[1];
  EXPECT_EQ(back.step(), 40);
}

TEST(HistoryTest, UnwritablePathIsAnError) {
  auto w = HistoryWriter::Open("/nonexistent-dir/history.jsonl");
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("/nonexistent-dir/history.jsonl"), std::string::npos);
}

}  // namespace
}  // namespace reid::monitoring
