// Dataset parsers on generated trees with the real naming schemes (junk, distractors, stray files,
// MSMT17 V1 and V2 layouts, CSV) and error messages.
#include "data/dataset.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "base/status_test_util.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

// LoadDataset with the dataset in *d when it loads; the Status for the message checks.
Status Load(DatasetKind kind, const std::string& root, Dataset* d) {
  StatusOr<Dataset> loaded = LoadDataset(kind, root);
  if (loaded.ok()) *d = *std::move(loaded);
  return loaded.status();
}

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
  for (const char* f :
       {"0000_c1s1_000151_01.jpg", "-1_c1s1_000401_03.jpg", "0001_c2s1_000301_01.jpg",
        "0003_c6s4_002427_02.jpg", "readme.txt", "Thumbs.db"}) {
    Touch(m + "bounding_box_test/" + f);
  }
  Dataset d;
  ASSERT_OK(Load(DatasetKind::kMarket1501, R(), &d));  // the parent folder
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
  ASSERT_OK(Load(DatasetKind::kMarket1501, R(m), &direct));
  EXPECT_EQ(StatsJson(direct), StatsJson(d));
  EXPECT_NE(StatsTable(d).find("train    |     3 |        4 |         4"), std::string::npos);
}

TEST_F(DatasetTest, MissingFolderNamesThePath) {
  Touch("Market-1501-v15.09.15/bounding_box_train/0002_c1s1_000451_03.jpg");
  Dataset d;
  const std::string err = Load(DatasetKind::kMarket1501, R(), &d).message();
  EXPECT_NE(err.find("Market-1501-v15.09.15/query: missing folder"), std::string::npos) << err;
  EXPECT_NE(Load(DatasetKind::kMarket1501, R("nope"), &d).message().find("nope"),
            std::string::npos);
  fs::create_directories(root_ / "empty");
  EXPECT_NE(Load(DatasetKind::kDukeMtmc, R("empty"), &d).message().find("DukeMTMC-reID"),
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
  ASSERT_OK(Load(DatasetKind::kDukeMtmc, R(), &d));
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
    ASSERT_OK(Load(DatasetKind::kMsmt17, R(), &d)) << dir;
    EXPECT_EQ(StatsJson(d),
              "{\"train\":{\"ids\":2,\"images\":3,\"cameras\":3},"
              "\"query\":{\"ids\":1,\"images\":1,\"cameras\":1},"
              "\"gallery\":{\"ids\":2,\"images\":2,\"cameras\":2}}");
    EXPECT_EQ(d.train[2].camid, 14);  // val merged into train; camera 15 -> 14
    EXPECT_EQ(d.train[0].path, R(m + train + "/0000/0000_000_01_0303morning_0015_0.jpg"));
    EXPECT_EQ(d.query[0].path, R(m + test + "/0000/0000_000_01_0303morning_0008_0.jpg"));
    // A malformed list line is an error naming the file and line.
    Touch(m + "list_query.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n0000/0000_x.jpg\n");
    const std::string err = Load(DatasetKind::kMsmt17, R(m), &d).message();
    EXPECT_NE(err.find("list_query.txt:2:"), std::string::npos) << err;
    // Train pids must be 0..N-1 (no relabel, as the reference asserts).
    Touch(m + "list_query.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n");
    Touch(m + "list_val.txt", "0005/0005_010_15_0303afternoon_0581_1.jpg 5\n");
    EXPECT_NE(Load(DatasetKind::kMsmt17, R(m), &d).message().find("not 0..2"), std::string::npos);
    fs::remove_all(root_);
  }
}

TEST_F(DatasetTest, Csv) {
  Touch("train.csv",
        "path,pid,camid\nimgs/a.jpg,17,0\nimgs/b.jpg,5,2\nimgs/sub/c.jpg,17,1\nj.jpg,-1,0\n");
  Touch("query.csv", "q.jpg,5,1\n");
  Touch("gallery.csv", "g.jpg,0,0\ng2.jpg,5,3\n");
  Dataset d;
  ASSERT_OK(Load(DatasetKind::kCsv, R(), &d));
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":2,\"images\":3,\"cameras\":3},"
            "\"query\":{\"ids\":1,\"images\":1,\"cameras\":1},"
            "\"gallery\":{\"ids\":2,\"images\":2,\"cameras\":2}}");
  EXPECT_EQ(d.num_cameras, 4);   // max camid + 1 over all splits (gallery's camid 3)
  EXPECT_EQ(d.train[0].pid, 1);  // 17 -> 1, 5 -> 0
  EXPECT_EQ(d.train[1].pid, 0);
  EXPECT_EQ(d.train[0].path, R("imgs/a.jpg"));
  EXPECT_EQ(d.train[2].path, R("imgs/sub/c.jpg"));
  Touch("query.csv", "q.jpg,5,1\nq2.jpg;5;1\n");
  const std::string err = Load(DatasetKind::kCsv, R(), &d).message();
  EXPECT_NE(err.find("query.csv:2: expected 'path,pid,camid'"), std::string::npos) << err;
}

// Issue 12: list paths may not leave the dataset, a list that is a directory is not an empty
// list, an empty split is an error, and an out-of-range pid is named as such.
TEST_F(DatasetTest, HostileListsAreErrors) {
  Touch("train.csv", "a.jpg,1,0\n");
  Touch("query.csv", "q.jpg,1,1\n");
  for (const char* bad : {"/etc/passwd,1,0", "../x.jpg,1,0", "imgs/../../x.jpg,1,0"}) {
    Touch("gallery.csv", std::string(bad) + "\n");
    Dataset d;
    EXPECT_NE(Load(DatasetKind::kCsv, R(), &d).message().find("gallery.csv:1: path"),
              std::string::npos)
        << bad;
  }
  Touch("gallery.csv", "path,pid,camid\n");
  Dataset d;
  EXPECT_NE(Load(DatasetKind::kCsv, R(), &d).message().find("the gallery split has no images"),
            std::string::npos);
  fs::remove(root_ / "gallery.csv");
  fs::create_directories(root_ / "gallery.csv");
  EXPECT_NE(Load(DatasetKind::kCsv, R(), &d).message().find("gallery.csv: not a regular file"),
            std::string::npos);
  const std::string m = "Market-1501/";
  Touch(m + "bounding_box_train/99999999999_c1s1_000451_03.jpg");
  Touch(m + "query/0001_c1s1_001051_00.jpg");
  Touch(m + "bounding_box_test/0001_c2s1_001051_00.jpg");
  const std::string err = Load(DatasetKind::kMarket1501, R(), &d).message();
  EXPECT_NE(err.find("pid 99999999999 is out of range"), std::string::npos) << err;
}

// List files that are FIFOs (a read blocked forever before) or devices are refused by name
// before anything is read; a FIFO named like an image is listed (its reading is the loader's
// business: an unreadable image, counted).
TEST_F(DatasetTest, ListsMustBeRegularFiles) {
  Touch("query.csv", "q.jpg,1,1\n");
  Touch("gallery.csv", "g.jpg,1,0\n");
  ASSERT_EQ(mkfifo(R("train.csv").c_str(), 0600), 0);
  Dataset d;
  Status s = Load(DatasetKind::kCsv, R(), &d);
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_EQ(s.message(), R("train.csv") + ": not a regular file (a FIFO)");
  fs::remove(root_ / "train.csv");
  fs::create_symlink("/dev/zero", root_ / "train.csv");
  EXPECT_EQ(Load(DatasetKind::kCsv, R(), &d).message(),
            R("train.csv") + ": not a regular file (a character device)");
  const std::string m = "MSMT17/";
  Touch(m + "train/0000/0000_000_01_0303morning_0015_0.jpg");
  Touch(m + "test/0000/0000_000_01_0303morning_0008_0.jpg");
  Touch(m + "list_train.txt", "0000/0000_000_01_0303morning_0015_0.jpg 0\n");
  Touch(m + "list_val.txt", "");
  Touch(m + "list_gallery.txt", "0000/0000_000_01_0303morning_0008_0.jpg 0\n");
  ASSERT_EQ(mkfifo(R(m + "list_query.txt").c_str(), 0600), 0);
  EXPECT_EQ(Load(DatasetKind::kMsmt17, R(), &d).message(),
            R(m + "list_query.txt") + ": not a regular file (a FIFO)");
  const std::string k = "Market-1501/";
  Touch(k + "bounding_box_train/0002_c1s1_000451_03.jpg");
  Touch(k + "query/0001_c1s1_001051_00.jpg");
  Touch(k + "bounding_box_test/0001_c2s1_001051_00.jpg");
  ASSERT_EQ(mkfifo(R(k + "bounding_box_train/0001_c1s1_000001_00.jpg").c_str(), 0600), 0);
  ASSERT_OK(Load(DatasetKind::kMarket1501, R(k), &d));
  EXPECT_EQ(d.train.size(), 2u);
}

// Writes `images` empty files named like Market-1501 (`0002_c1s1_000451_03.jpg`) or
// DukeMTMC-reID (`0001_c2_f0046182.jpg`) into `dir`, cycling over pids first_pid.. (ids of them,
// pid 0 first when `distractors`) and cameras 1..cams.
void WriteSplit(const fs::path& dir, bool duke, int first_pid, int ids, int images, int cams) {
  fs::create_directories(dir);
  char name[64];
  for (int i = 0; i < images; ++i) {
    const int pid = first_pid + i % ids, cam = 1 + (i / ids + i) % cams;
    if (duke) {
      std::snprintf(name, sizeof(name), "%04d_c%d_f%07d.jpg", pid, cam, i);
    } else {
      std::snprintf(name, sizeof(name), "%04d_c%ds1_%06d_%02d.jpg", pid, cam, i, i % 7);
    }
    std::ofstream(dir / name).close();
  }
}

// Trees of the real datasets' sizes and naming schemes give the statistics CLIP-ReID prints.
TEST_F(DatasetTest, ReferenceSizedTreesGiveTheReferenceStatistics) {
  const fs::path m = root_ / "Market-1501-v15.09.15";
  WriteSplit(m / "bounding_box_train", false, 2, 751, 12936, 6);
  WriteSplit(m / "query", false, 1, 750, 3368, 6);
  WriteSplit(m / "bounding_box_test", false, 0, 751, 15913, 6);  // pid 0 = distractors
  for (int i = 0; i < 50; ++i) {                                 // junk
    std::ofstream(m / "bounding_box_test" / ("-1_c1s1_" + std::to_string(i) + "_00.jpg")).close();
  }
  Dataset d;
  ASSERT_OK(Load(DatasetKind::kMarket1501, R(), &d));
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":751,\"images\":12936,\"cameras\":6},"
            "\"query\":{\"ids\":750,\"images\":3368,\"cameras\":6},"
            "\"gallery\":{\"ids\":751,\"images\":15913,\"cameras\":6}}");
  EXPECT_EQ(d.num_train_pids, 751);
  const fs::path k = root_ / "dukemtmcreid" / "DukeMTMC-reID";
  WriteSplit(k / "bounding_box_train", true, 1, 702, 16522, 8);
  WriteSplit(k / "query", true, 1, 702, 2228, 8);
  WriteSplit(k / "bounding_box_test", true, 1, 1110, 17661, 8);
  ASSERT_OK(Load(DatasetKind::kDukeMtmc, R(), &d));
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":702,\"images\":16522,\"cameras\":8},"
            "\"query\":{\"ids\":702,\"images\":2228,\"cameras\":8},"
            "\"gallery\":{\"ids\":1110,\"images\":17661,\"cameras\":8}}");
  // MSMT17: list files only (the parser does not open the images).
  const fs::path t = root_ / "MSMT17";
  fs::create_directories(t / "train");
  fs::create_directories(t / "test");
  auto write_list = [&](const char* name, int ids, int images, int first) {
    std::ofstream f(t / name);
    for (int i = first; i < first + images; ++i) {
      const int pid = i % ids, cam = 1 + (i / ids + i) % 15;
      char line[96];
      std::snprintf(line, sizeof(line), "%04d/%04d_%03d_%02d_0303morning_%04d_0.jpg %d\n", pid, pid,
                    i % 1000, cam, i % 10000, pid);
      f << line;
    }
  };
  write_list("list_train.txt", 1041, 30248, 0);
  write_list("list_val.txt", 1041, 2373, 30248);
  write_list("list_query.txt", 3060, 11659, 0);
  write_list("list_gallery.txt", 3060, 82161, 0);
  ASSERT_OK(Load(DatasetKind::kMsmt17, R(), &d));
  EXPECT_EQ(StatsJson(d),
            "{\"train\":{\"ids\":1041,\"images\":32621,\"cameras\":15},"
            "\"query\":{\"ids\":3060,\"images\":11659,\"cameras\":15},"
            "\"gallery\":{\"ids\":3060,\"images\":82161,\"cameras\":15}}");
}

}  // namespace
}  // namespace reid::data
