// The synthetic generator: a Market-1501 tree the parser reads back with the documented split
// sizes, deterministic from the seed, and options out of range refused.
#include "data/synth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "base/status_test_util.h"
#include "data/dataset.h"
#include "data/options.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

class SynthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("reid_synth_test_" + std::to_string(::getpid()));
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string R(const std::string& rel) const { return (root_ / rel).string(); }
  fs::path root_;
};

TEST_F(SynthTest, RoundTripAndDeterminism) {
  SynthOptions opt = SynthOptionsFromConfig(reid::proto::DataConfig());  // schema defaults
  opt.ids = 6;
  opt.cameras = 3;
  opt.images_per_id = 4;
  StatusOr<SynthSummary> written = GenerateSynthetic(opt, R("a"));
  ASSERT_OK(written);
  EXPECT_EQ(written->train_images, 24);
  EXPECT_EQ(written->query_images, 6);
  EXPECT_EQ(written->gallery_images, 18);
  EXPECT_EQ(written->distractors, 3);
  EXPECT_EQ(written->junk, 2);
  ASSERT_OK(GenerateSynthetic(opt, R("b")));
  opt.seed = 8;
  ASSERT_OK(GenerateSynthetic(opt, R("c")));
  StatusOr<Dataset> d = LoadDataset(DatasetKind::kMarket1501, R("a"));
  ASSERT_OK(d);
  // Gallery: 6 ids x 3 images + 3 distractors (pid 0); the 2 junk images are dropped.
  EXPECT_EQ(StatsJson(*d),
            "{\"train\":{\"ids\":6,\"images\":24,\"cameras\":3},"
            "\"query\":{\"ids\":6,\"images\":6,\"cameras\":3},"
            "\"gallery\":{\"ids\":7,\"images\":21,\"cameras\":3}}");
  auto bytes = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string name = "/bounding_box_train/0003_c3s1_000002_00.jpg";
  ASSERT_FALSE(bytes(R("a") + name).empty());
  EXPECT_EQ(bytes(R("a") + name), bytes(R("b") + name));
  EXPECT_NE(bytes(R("a") + name), bytes(R("c") + name));
}

TEST_F(SynthTest, OptionsOutOfRangeAreRefused) {
  SynthOptions opt = SynthOptionsFromConfig(reid::proto::DataConfig());
  opt.cameras = 12;  // Market-1501 names cameras with one digit
  const StatusOr<SynthSummary> written = GenerateSynthetic(opt, R("d"));
  ASSERT_FALSE(written.ok());
  EXPECT_EQ(written.status().exit_code(), 2);
  EXPECT_NE(written.status().message().find("data.synthetic"), std::string::npos)
      << written.status().message();
  EXPECT_FALSE(fs::exists(root_ / "d"));  // refused before writing anything
}

}  // namespace
}  // namespace reid::data
