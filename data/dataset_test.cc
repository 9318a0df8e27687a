// Dataset parsers on generated trees with the real naming schemes (junk, distractors, stray files,
// MSMT17 V1 and V2 layouts, CSV), error messages, and the synthetic generator's round trip.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <tuple>

#include <unistd.h>

#include "data/dataset.h"
#include "data/synth.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("reid_dataset_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  void Touch(const std::string& rel, const std::string& content = "") {
    const fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }
  std::string R(const std::string& rel = "") const { return (root_ / rel).string(); }
  fs::path root_;
};

TEST_F(DatasetTest, Market1501) {
  const std::string m = "Market-1501-v15.09.15/";
  for (const char* f : {"0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg",
                        "0007_c3s3_077419_03.jpg", "0010_c6s4_002427_02.jpg", "Thumbs.db"}) {
    Touch(m + "bounding_box_train/" + f);
  }
  for (const char* f : {"0001_c1s1_001051_00.jpg", "0003_c3s3_064744_00.jpg"}) {
    Touch(m + "query/" + f);
  }
  for (const char* f : {"0000_c1s1_000151_01.jpg", "-1_c1s1_000401_03.jpg",
                        "0001_c2s1_000301_01.jpg", "0003_c6s4_002427_02.jpg", "readme.txt",
                        "Thumbs.db"}) {
    Touch(m + "bounding_box_test/" + f);
  }
  Dataset d;
  ASSERT_EQ(LoadDataset(DatasetKind::kMarket1501, R(), &d), "");  // the parent folder
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":3,\"images\":4,\"cameras\":4},"
            "\"query\":{\"ids\":2,\"images\":2,\"cameras\":2},"
            "\"gallery\":{\"ids\":3,\"images\":3,\"cameras\":3}}");
  // Relabelled in ascending pid order (2, 7, 10 -> 0, 1, 2); cameras 0-based.
  ASSERT_EQ(d.train.size(), 4u);
  EXPECT_EQ(d.train[0].pid, 0);
  EXPECT_EQ(d.train[0].camid, 0);
  EXPECT_EQ(d.train[1].camid, 1);
  EXPECT_EQ(d.train[2].pid, 1);
  EXPECT_EQ(d.train[3].pid, 2);
  EXPECT_EQ(d.train[3].camid, 5);
  EXPECT_EQ(d.num_train_pids, 3);
  EXPECT_EQ(d.gallery[0].pid, 0);  // distractor kept, raw pid
  EXPECT_EQ(d.query[1].pid, 3);
  Dataset direct;  // the dataset folder itself
  ASSERT_EQ(LoadDataset(DatasetKind::kMarket1501, R(m), &direct), "");
  EXPECT_EQ(StatsJson(direct), StatsJson(d));
  EXPECT_NE(StatsTable(d).find("train    |     3 |        4 |         4"), std::string::npos);
}

TEST_F(DatasetTest, MissingFolderNamesThePath) {
  Touch("Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg");
  Dataset d;
  const std::string err = LoadDataset(DatasetKind::kMarket1501, R(), &d);
  EXPECT_NE(err.find("Market-1501-v15.09.15/query: missing folder"), std::string::npos) << err;
  EXPECT_NE(LoadDataset(DatasetKind::kMarket1501, R("nope"), &d).find("nope"), std::string::npos);
  fs::create_directories(root_ / "empty");
  EXPECT_NE(LoadDataset(DatasetKind::kDukeMtmc, R("empty"), &d).find("DukeMTMC-reID"),
            std::string::npos);
}

TEST_F(DatasetTest, DukeMtmcReid) {
  const std::string m = "dukemtmcreid/DukeMTMC-reID/";
  for (const char* f : {"0001_c2_f0046182.jpg", "0005_c5_f0051781.jpg", "0005_c8_f0051782.jpg"}) {
    Touch(m + "bounding_box_train/" + f);
  }
  Touch(m + "query/0005_c2_f0046985.jpg");
  Touch(m + "bounding_box_test/0005_c6_f0046981.jpg");
  Touch(m + "bounding_box_test/0019_c7_f0088731.jpg");
  Touch(m + "CITATION.txt");
  Dataset d;
  ASSERT_EQ(LoadDataset(DatasetKind::kDukeMtmc, R(), &d), "");
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":2,\"images\":3,\"cameras\":3},"
            "\"query\":{\"ids\":1,\"images\":1,\"cameras\":1},"
            "\"gallery\":{\"ids\":2,\"images\":2,\"cameras\":2}}");
  EXPECT_EQ(d.train[2].camid, 7);
  EXPECT_EQ(d.train[2].pid, 1);
}

TEST_F(DatasetTest, Msmt17V1AndV2) {
  for (auto [dir, train, test] : {std::tuple{"MSMT17", "train", "test"},
                                  std::tuple{"MSMT17_V2", "mask_train_v2", "mask_test_v2"}}) {
    const std::string m = std::string(dir) + "/";
    Touch(m + train + "/0000/0000_000_01_0303morning_0015_0.jpg");
    Touch(m + test + "/0000/0000_000_01_0303morning_0008_0.jpg");
    Touch(m + "list_train.txt",
          "0000/0000_000_01_0303morning_0015_0.jpg 0\n"
          "0001/0001_004_03_0303morning_0036_1.jpg 1\n");
    Touch(m + "list_val.txt", "0000/0000_010_15_0303afternoon_0581_1.jpg 0\r\n");
    Touch(m + "list_query.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n");
    Touch(m + "list_gallery.txt",
          "0000/0000_012_07_0303afternoon_0591_0.jpg 0\n"
          "0003/0003_001_13_0303noon_0101_2.jpg 3\n\n");
    Dataset d;
    ASSERT_EQ(LoadDataset(DatasetKind::kMsmt17, R(), &d), "") << dir;
    EXPECT_EQ(StatsJson(d),
              "{\"train\":{\"ids\":2,\"images\":3,\"cameras\":3},"
              "\"query\":{\"ids\":1,\"images\":1,\"cameras\":1},"
              "\"gallery\":{\"ids\":2,\"images\":2,\"cameras\":2}}");
    EXPECT_EQ(d.train[2].camid, 14);  // val merged into train; camera 15 -> 14
    EXPECT_EQ(d.train[0].path, R(m + train + "/0000/0000_000_01_0303morning_0015_0.jpg"));
    EXPECT_EQ(d.query[0].path, R(m + test + "/0000/0000_000_01_0303morning_0008_0.jpg"));
    // A malformed list line is an error naming the file and line.
    Touch(m + "list_query.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n0000/0000_x.jpg\n");
    const std::string err = LoadDataset(DatasetKind::kMsmt17, R(m), &d);
    EXPECT_NE(err.find("list_query.txt:2:"), std::string::npos) << err;
    // Train pids must be 0..N-1 (no relabel, as the reference asserts).
    Touch(m + "list_query.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n");
    Touch(m + "list_val.txt", "0005/0005_010_15_0303afternoon_0581_1.jpg 5\n");
    EXPECT_NE(LoadDataset(DatasetKind::kMsmt17, R(m), &d).find("not 0..2"), std::string::npos);
    fs::remove_all(root_);
  }
}

TEST_F(DatasetTest, Csv) {
  Touch("train.csv", "path,pid,camid\nimgs/a.jpg,17,0\nimgs/b.jpg,5,2\n/abs/c.jpg,17,1\nj.jpg,-1,0\n");
  Touch("query.csv", "q.jpg,5,1\n");
  Touch("gallery.csv", "g.jpg,0,0\ng2.jpg,5,3\n");
  Dataset d;
  ASSERT_EQ(LoadDataset(DatasetKind::kCsv, R(), &d), "");
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":2,\"images\":3,\"cameras\":3},"
            "\"query\":{\"ids\":1,\"images\":1,\"cameras\":1},"
            "\"gallery\":{\"ids\":2,\"images\":2,\"cameras\":2}}");
  EXPECT_EQ(d.train[0].pid, 1);  // 17 -> 1, 5 -> 0
  EXPECT_EQ(d.train[1].pid, 0);
  EXPECT_EQ(d.train[0].path, R("imgs/a.jpg"));
  EXPECT_EQ(d.train[2].path, "/abs/c.jpg");
  Touch("query.csv", "q.jpg,5,1\nq2.jpg;5;1\n");
  const std::string err = LoadDataset(DatasetKind::kCsv, R(), &d);
  EXPECT_NE(err.find("query.csv:2: expected 'path,pid,camid'"), std::string::npos) << err;
}

TEST_F(DatasetTest, SyntheticRoundTripAndDeterminism) {
  SynthOptions opt;
  opt.ids = 6;
  opt.cameras = 3;
  opt.images_per_id = 4;
  SynthSummary s;
  ASSERT_EQ(GenerateSynthetic(opt, R("a"), &s), "");
  ASSERT_EQ(GenerateSynthetic(opt, R("b"), &s), "");
  opt.seed = 8;
  ASSERT_EQ(GenerateSynthetic(opt, R("c"), &s), "");
  Dataset d;
  ASSERT_EQ(LoadDataset(DatasetKind::kMarket1501, R("a"), &d), "");
  // Gallery: 6 ids x 3 images + 3 distractors (pid 0); the 2 junk images are dropped.
  EXPECT_EQ(StatsJson(d),
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
  opt.cameras = 12;
  EXPECT_NE(GenerateSynthetic(opt, R("d"), &s).find("--cameras"), std::string::npos);
}

}  // namespace
}  // namespace reid::data
