// Checkpoint directories: round trip, damage detection (truncation, flipped byte), fallback of
// FindLatestValid past damaged ones, a failed write leaving the previous checkpoint usable, and
// pruning to keep-last-N plus best plus the last stage-1 checkpoint.
#include "trainer/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace reid::trainer {
namespace {
namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/reid_ckpt_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(dir_); }
  Status Write(CheckpointStore& store, int stage, int epoch, double map = -1) {
    proto::CheckpointMeta meta;
    meta.set_stage(stage);
    meta.mutable_sampler()->set_epoch(epoch);
    if (map >= 0) (*meta.mutable_metrics())["mAP"] = map;
    NamedTensors t = {{"w", torch::full({3, 2}, static_cast<float>(epoch))}};
    return store.Commit(CheckpointName(stage, epoch, 0), meta,
                        {{"model.pt", SerializeTensors(t)}, {"extra.bin", std::string(100, 'x')}},
                        /*keep_last_n=*/2, /*keep_best=*/true);
  }
  std::string dir_;
};

TEST_F(CheckpointTest, RoundTripAndVerify) {
  CheckpointStore store(dir_);
  ASSERT_TRUE(Write(store, 2, 3).ok());
  const std::string path = dir_ + "/" + CheckpointName(2, 3, 0);
  proto::CheckpointMeta meta;
  ASSERT_TRUE(VerifyCheckpoint(path, &meta).ok());
  EXPECT_EQ(meta.files_size(), 2);
  StatusOr<std::string> bytes = ReadCheckpointFile(path, meta, "model.pt");
  ASSERT_TRUE(bytes.ok());
  StatusOr<NamedTensors> t = DeserializeTensors(*bytes, "model.pt");
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(torch::equal(t->at(0).second, torch::full({3, 2}, 3.0f)));
  EXPECT_TRUE(fs::exists(path + "/meta.txtpb"));
  EXPECT_TRUE(fs::exists(dir_ + "/index.txtpb"));
}

TEST_F(CheckpointTest, DetectsDamageAndFallsBack) {
  CheckpointStore store(dir_);
  ASSERT_TRUE(Write(store, 2, 1).ok());
  ASSERT_TRUE(Write(store, 2, 2).ok());
  const std::string newest = dir_ + "/" + CheckpointName(2, 2, 0);
  {  // flip one byte of extra.bin
    std::fstream f(newest + "/extra.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('y');
  }
  proto::CheckpointMeta meta;
  Status s = VerifyCheckpoint(newest, &meta);
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_NE(s.message().find("extra.bin"), std::string::npos) << s.message();
  StatusOr<std::string> latest = store.FindLatestValid();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, dir_ + "/" + CheckpointName(2, 1, 0));
  fs::resize_file(dir_ + "/" + CheckpointName(2, 1, 0) + "/model.pt", 10);  // truncated
  EXPECT_EQ(store.FindLatestValid().status().code(), Status::Code::kNotFound);
}

TEST_F(CheckpointTest, FailedWriteLeavesThePreviousOne) {
  CheckpointStore store(dir_);
  ASSERT_TRUE(Write(store, 1, 1).ok());
  setenv("REID_FAULT_CHECKPOINT_WRITE", "2", 1);
  Status s = Write(store, 1, 2);
  unsetenv("REID_FAULT_CHECKPOINT_WRITE");
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(fs::exists(dir_ + "/" + CheckpointName(1, 2, 0)));
  StatusOr<std::string> latest = store.FindLatestValid();
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(*latest, dir_ + "/" + CheckpointName(1, 1, 0));
  proto::CheckpointMeta meta;
  EXPECT_TRUE(VerifyCheckpoint(*latest, &meta).ok());
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
  }
}

TEST_F(CheckpointTest, KeepsLastNBestAndLastStage1) {
  CheckpointStore store(dir_);
  ASSERT_TRUE(Write(store, 1, 5).ok());
  ASSERT_TRUE(Write(store, 2, 1, 0.9).ok());
  ASSERT_TRUE(Write(store, 2, 2, 0.5).ok());
  ASSERT_TRUE(Write(store, 2, 3, 0.6).ok());
  ASSERT_TRUE(Write(store, 2, 4, 0.7).ok());
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir_)) {
    if (e.is_directory()) left.push_back(e.path().filename().string());
  }
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{CheckpointName(1, 5, 0), CheckpointName(2, 1, 0),
                                            CheckpointName(2, 3, 0), CheckpointName(2, 4, 0)}));
}

TEST_F(CheckpointTest, NotACheckpoint) {
  proto::CheckpointMeta meta;
  EXPECT_EQ(VerifyCheckpoint(dir_, &meta).code(), Status::Code::kNotFound);
  EXPECT_EQ(ResolveCheckpoint(dir_ + "/nothing").status().code(), Status::Code::kNotFound);
  std::ofstream(dir_ + "/meta.pb") << "garbage that is not a proto \xff\xff";
  EXPECT_EQ(VerifyCheckpoint(dir_, &meta).code(), Status::Code::kDataLoss);
}

TEST_F(CheckpointTest, CopyTensorsByNameReportsShapeMismatch) {
  torch::Tensor dst = torch::zeros({2, 2});
  Status s = CopyTensorsByName({{"w", torch::ones({3})}}, {{"w", dst}}, "model.pt");
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("w has shape"), std::string::npos) << s.message();
  ASSERT_TRUE(CopyTensorsByName({{"w", torch::ones({2, 2})}}, {{"w", dst}}, "m").ok());
  EXPECT_EQ(dst.sum().item<float>(), 4.0f);
}

}  // namespace
}  // namespace reid::trainer
