// Checkpoint directories: round trip, damage detection (truncation, flipped byte), fallback of
// FindLatestValid past damaged ones, a failed write leaving the previous checkpoint usable, and
// pruning to keep-last-N plus best plus the last stage-1 checkpoint; order by position (not by
// name), folders that are not ours, leftovers of a killed write, meta.pb's file list, format 1,
// files that are not regular or exceed their limit, bounded zip records.
#include "trainer/checkpoint.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "base/status_test_util.h"

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
                        {{"model.pt", *SerializeTensors(t)}, {"extra.bin", std::string(100, 'x')}},
                        keep_last_n_, /*keep_best=*/true);
  }
  // The checkpoint folders left, sorted by name.
  std::vector<std::string> Left() const {
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(dir_)) {
      if (e.is_directory()) left.push_back(e.path().filename().string());
    }
    std::sort(left.begin(), left.end());
    return left;
  }
  // Rewrites `path`/meta.pb after `edit`.
  static void EditMeta(const std::string& path,
                       const std::function<void(proto::CheckpointMeta*)>& edit) {
    proto::CheckpointMeta meta;
    std::ifstream in(path + "/meta.pb", std::ios::binary);
    ASSERT_TRUE(meta.ParseFromIstream(&in));
    edit(&meta);
    std::ofstream(path + "/meta.pb", std::ios::binary | std::ios::trunc)
        << meta.SerializeAsString();
  }
  int keep_last_n_ = 2;
  std::string dir_;
};

TEST_F(CheckpointTest, RoundTripAndVerify) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 3));
  const std::string path = dir_ + "/" + CheckpointName(2, 3, 0);
  proto::CheckpointMeta meta;
  ASSERT_OK(VerifyCheckpoint(path, &meta));
  EXPECT_EQ(meta.files_size(), 2);
  StatusOr<std::string> bytes = ReadCheckpointFile(path, meta, "model.pt");
  ASSERT_OK(bytes);
  StatusOr<NamedTensors> t = DeserializeTensors(*bytes, "model.pt");
  ASSERT_OK(t);
  EXPECT_TRUE(torch::equal(t->at(0).second, torch::full({3, 2}, 3.0f)));
  EXPECT_TRUE(fs::exists(path + "/meta.txtpb"));
  EXPECT_TRUE(fs::exists(dir_ + "/index.txtpb"));
}

TEST_F(CheckpointTest, DetectsDamageAndFallsBack) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  ASSERT_OK(Write(store, 2, 2));
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
  ASSERT_OK(latest);
  EXPECT_EQ(*latest, dir_ + "/" + CheckpointName(2, 1, 0));
  fs::resize_file(dir_ + "/" + CheckpointName(2, 1, 0) + "/model.pt", 10);  // truncated
  EXPECT_EQ(store.FindLatestValid().status().code(), Status::Code::kNotFound);
}

TEST_F(CheckpointTest, FailedWriteLeavesThePreviousOne) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 1, 1));
  setenv("REID_FAULT_CHECKPOINT_WRITE", "2", 1);
  Status s = Write(store, 1, 2);
  unsetenv("REID_FAULT_CHECKPOINT_WRITE");
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(fs::exists(dir_ + "/" + CheckpointName(1, 2, 0)));
  StatusOr<std::string> latest = store.FindLatestValid();
  ASSERT_OK(latest);
  EXPECT_EQ(*latest, dir_ + "/" + CheckpointName(1, 1, 0));
  proto::CheckpointMeta meta;
  EXPECT_OK(VerifyCheckpoint(*latest, &meta));
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
  }
}

TEST_F(CheckpointTest, KeepsLastNBestAndLastStage1) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 1, 5));
  ASSERT_OK(Write(store, 2, 1, 0.9));
  ASSERT_OK(Write(store, 2, 2, 0.5));
  ASSERT_OK(Write(store, 2, 3, 0.6));
  ASSERT_OK(Write(store, 2, 4, 0.7));
  EXPECT_EQ(Left(), (std::vector<std::string>{CheckpointName(1, 5, 0), CheckpointName(2, 1, 0),
                                              CheckpointName(2, 3, 0), CheckpointName(2, 4, 0)}));
}

TEST_F(CheckpointTest, WritesFormat2TensorFilesThatKeepDtypes) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 1, 1));
  proto::CheckpointMeta meta;
  ASSERT_OK(VerifyCheckpoint(dir_ + "/" + CheckpointName(1, 1, 0), &meta));
  EXPECT_EQ(meta.format_version(), kCheckpointFormatVersion);
  NamedTensors t = {{"b", torch::arange(5, torch::kInt64)},
                    {"a", torch::rand({2, 3}, torch::kDouble)},
                    {"c", torch::randint(0, 255, {7}, torch::kByte)}};
  StatusOr<NamedTensors> back = DeserializeTensors(*SerializeTensors(t), "x");
  ASSERT_OK(back);
  ASSERT_EQ(back->size(), 3u);  // sorted by name
  EXPECT_EQ(back->at(0).first, "a");
  EXPECT_TRUE(torch::equal(back->at(0).second, t[1].second));
  EXPECT_TRUE(torch::equal(back->at(1).second, t[0].second));
  EXPECT_TRUE(torch::equal(back->at(2).second, t[2].second));
  // Garbage: one line naming the file.
  Status s = DeserializeTensors(std::string(3000, 'x'), "DIR/rng.pt").status();
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message().rfind("DIR/rng.pt: not a checkpoint tensor file (", 0), 0u) << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
}

TEST_F(CheckpointTest, ZipRecordsMayNotClaimMoreThanTheFile) {
  std::string bytes = *SerializeTensors({{"w", torch::zeros({1000})}});
  // The central directory entry of the first record: its uncompressed size becomes 0xe5000017.
  const size_t entry = bytes.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(entry, std::string::npos);
  const char huge[4] = {'\x17', '\x00', '\x00', '\xe5'};
  bytes.replace(entry + 24, 4, huge, 4);
  Status s = DeserializeTensors(bytes, "model.pt").status();
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_NE(s.message().find("claims 3841982487 bytes but the file holds"), std::string::npos)
      << s.message();
}

TEST_F(CheckpointTest, RefusesFormat1) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  ASSERT_OK(Write(store, 2, 2));
  const std::string newest = dir_ + "/" + CheckpointName(2, 2, 0);
  EditMeta(newest, [](proto::CheckpointMeta* m) { m->clear_format_version(); });  // = 1
  proto::CheckpointMeta meta;
  Status s = VerifyCheckpoint(newest, &meta);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("format_version 1, written by an earlier build"), std::string::npos);
  EXPECT_NE(s.message().find("TorchScript loader"), std::string::npos);
  // --resume=auto does not silently start fresh over it (nor take an older one).
  EXPECT_EQ(store.FindLatestValid().status().code(), Status::Code::kInvalidArgument);
  // Never pruned: a format-1 checkpoint is left as it is.
  keep_last_n_ = 1;
  ASSERT_OK(Write(store, 2, 3));
  ASSERT_OK(Write(store, 2, 4));
  EXPECT_EQ(Left(), (std::vector<std::string>{CheckpointName(2, 2, 0), CheckpointName(2, 4, 0)}));
}

TEST_F(CheckpointTest, MetaFileListIsShortUniqueAndHasAModel) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  ASSERT_OK(Write(store, 2, 2));
  const std::string newest = dir_ + "/" + CheckpointName(2, 2, 0);
  proto::CheckpointMeta meta;
  auto expect = [&](const std::string& part) {
    Status s = VerifyCheckpoint(newest, &meta);
    EXPECT_EQ(s.code(), Status::Code::kDataLoss) << s.message();
    EXPECT_EQ(s.message().rfind(newest + "/meta.pb: ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
    // --resume=auto skips it for the older one.
    EXPECT_EQ(*store.FindLatestValid(), dir_ + "/" + CheckpointName(2, 1, 0));
  };
  EditMeta(newest, [](proto::CheckpointMeta* m) {
    for (int i = 0; i < 20000; ++i) *m->add_files() = m->files(0);
  });
  expect("lists 20002 files (a checkpoint has at most 16)");
  EditMeta(newest, [](proto::CheckpointMeta* m) {
    m->mutable_files()->DeleteSubrange(3, m->files_size() - 3);
  });
  expect("lists 'model.pt' twice");
  EditMeta(newest, [](proto::CheckpointMeta* m) { m->clear_files(); });
  expect("lists no model.pt (0 files)");
  std::ofstream(newest + "/meta.pb", std::ios::trunc).close();  // empty: no files, no position
  Status s = VerifyCheckpoint(newest, &meta);
  EXPECT_NE(s.message().find("lists no model.pt"), std::string::npos) << s.message();
  EXPECT_EQ(*store.FindLatestValid(), dir_ + "/" + CheckpointName(2, 1, 0));
}

TEST_F(CheckpointTest, FilesMustBeRegularAndWithinTheirLimit) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  const std::string path = dir_ + "/" + CheckpointName(2, 1, 0);
  proto::CheckpointMeta meta;
  ASSERT_OK(VerifyCheckpoint(path, &meta));
  const std::string model = path + "/model.pt";
  // A FIFO and a link to /dev/zero named model.pt: refused without blocking or reading.
  fs::remove(model);
  ASSERT_EQ(mkfifo(model.c_str(), 0600), 0);
  Status s = VerifyCheckpoint(path, &meta);
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), model + ": not a regular file (a FIFO)");
  EXPECT_EQ(ReadCheckpointFile(path, meta, "model.pt").status().message(),
            model + ": not a regular file (a FIFO)");
  fs::remove(model);
  fs::create_symlink("/dev/zero", model);
  EXPECT_EQ(VerifyCheckpoint(path, &meta).message(),
            model + ": not a regular file (a character device)");
  // A sparse file over the 4 GiB limit with its size fitted in meta.pb: refused before reading.
  fs::remove(model);
  std::ofstream(model).close();
  const uint64_t big = (uint64_t{4} << 30) + 4096;
  fs::resize_file(model, big);
  EditMeta(path, [&](proto::CheckpointMeta* m) { m->mutable_files(0)->set_size_bytes(big); });
  s = VerifyCheckpoint(path, &meta);
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), model + ": 4.3 GB is more than the 4 GiB limit for model.pt");
  s = ReadCheckpointFile(path, meta, "model.pt").status();
  EXPECT_EQ(s.message(),
            model + ": 4.3 GB (4294971392 bytes) is more than the 4 GiB limit for model.pt");
  // A caller's smaller limit (the model it built) names both sizes and where the limit comes from.
  fs::resize_file(model, 3 << 20);
  EditMeta(path, [&](proto::CheckpointMeta* m) { m->mutable_files(0)->set_size_bytes(3 << 20); });
  ASSERT_OK(ReadCheckpointMeta(path, &meta));
  s = ReadCheckpointFile(path, meta, "model.pt", 2 << 20, "the model holds 1 MB").status();
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), model +
                             ": 3.1 MB (3145728 bytes) is more than the 2 MiB limit for "
                             "model.pt (the model holds 1 MB)");
  // The derived limits of the other files.
  meta.set_world_size(4);
  EXPECT_EQ(CheckpointFileLimit(meta, "optimizer.pt"), 3 * (3u << 20) + (16u << 20));
  EXPECT_EQ(CheckpointFileLimit(meta, "rng.pt"), 4 * 65536u + (1u << 20));
  EXPECT_EQ(CheckpointFileLimit(meta, "scaler.pt"), 1u << 20);
}

TEST_F(CheckpointTest, VerifiesLargeFilesInPieces) {
  CheckpointStore store(dir_);
  std::string big(10 << 20, '\0');
  for (size_t i = 0; i < big.size(); i += 4093) big[i] = static_cast<char>(i);
  proto::CheckpointMeta meta;
  meta.set_stage(2);
  meta.mutable_sampler()->set_epoch(1);
  ASSERT_OK(store.Commit(CheckpointName(2, 1, 0), meta, {{"model.pt", big}, {"extra.bin", "x"}}, 2,
                         false));
  const std::string path = dir_ + "/" + CheckpointName(2, 1, 0);
  EXPECT_OK(VerifyCheckpoint(path, &meta));
  {  // the last byte of the last piece
    std::fstream f(path + "/model.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp((10 << 20) - 1);
    f.put('y');
  }
  EXPECT_EQ(VerifyCheckpoint(path, &meta).message(),
            path + "/model.pt: CRC-32 mismatch (file damaged)");
}

TEST_F(CheckpointTest, OrdersByPositionNeverByName) {
  keep_last_n_ = 1;
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 9999));
  ASSERT_OK(Write(store, 2, 10000));  // "s2-e10000" sorts before "s2-e9999" by name
  EXPECT_EQ(Left(), (std::vector<std::string>{CheckpointName(2, 10000, 0)}));
  EXPECT_EQ(*store.FindLatestValid(), dir_ + "/" + CheckpointName(2, 10000, 0));
  std::ifstream index(dir_ + "/index.txtpb");
  std::string text((std::istreambuf_iterator<char>(index)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("latest: \"s2-e10000-i000000\""), std::string::npos) << text;
  ASSERT_OK(Write(store, 2, 10001));
  EXPECT_EQ(Left(), (std::vector<std::string>{CheckpointName(2, 10001, 0)}));
}

TEST_F(CheckpointTest, FoldersThatAreNotOursAreLeftAlone) {
  keep_last_n_ = 1;
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  const std::string real = dir_ + "/" + CheckpointName(2, 1, 0);
  // Copies of a real checkpoint under names that are not its position, and a folder of junk.
  for (const char* name : {"sz-e0001-i000000", "s9-e0001-i000000", "s2-e0005-i000000"}) {
    fs::copy(real, dir_ + "/" + name, fs::copy_options::recursive);
  }
  fs::create_directory(dir_ + "/s2-e0006-i000000");
  std::ofstream(dir_ + "/s2-e0006-i000000/notes.txt") << "mine";
  EXPECT_EQ(*store.FindLatestValid(), real);
  ASSERT_OK(Write(store, 2, 2));
  ASSERT_OK(Write(store, 2, 3));
  EXPECT_EQ(Left(),
            (std::vector<std::string>{CheckpointName(2, 3, 0), "s2-e0005-i000000",
                                      "s2-e0006-i000000", "s9-e0001-i000000", "sz-e0001-i000000"}));
  EXPECT_EQ(*store.FindLatestValid(), dir_ + "/" + CheckpointName(2, 3, 0));
}

TEST_F(CheckpointTest, RemovesWhatAKilledWriteLeft) {
  CheckpointStore store(dir_);
  ASSERT_OK(Write(store, 2, 1));
  ASSERT_OK(Write(store, 2, 2));
  const std::string a = CheckpointName(2, 1, 0), b = CheckpointName(2, 2, 0);
  fs::create_directory(dir_ + "/.tmp-" + CheckpointName(2, 3, 0));
  std::ofstream(dir_ + "/.tmp-" + CheckpointName(2, 3, 0) + "/model.pt") << "part";
  std::ofstream(dir_ + "/index.txtpb.tmp") << "latest";
  fs::rename(dir_ + "/" + b, dir_ + "/.old-" + b);  // killed between the two renames
  fs::copy(dir_ + "/" + a, dir_ + "/.old-" + a, fs::copy_options::recursive);  // after both
  const std::vector<std::string> notes = store.RemoveLeftovers();
  ASSERT_EQ(notes.size(), 4u);
  EXPECT_EQ(notes[0],
            "removed " + dir_ + "/.old-" + a + " (left by a run stopped while replacing it)");
  EXPECT_EQ(notes[1], "restored " + dir_ + "/" + b + " from " + dir_ + "/.old-" + b +
                          " (a run stopped while replacing it)");
  EXPECT_EQ(notes[2], "removed " + dir_ + "/.tmp-" + CheckpointName(2, 3, 0) +
                          " (left by a run stopped while writing it)");
  EXPECT_EQ(Left(), (std::vector<std::string>{a, b}));
  EXPECT_FALSE(fs::exists(dir_ + "/index.txtpb.tmp"));
  EXPECT_EQ(*store.FindLatestValid(), dir_ + "/" + b);
  EXPECT_TRUE(store.RemoveLeftovers().empty());
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
  ASSERT_OK(CopyTensorsByName({{"w", torch::ones({2, 2})}}, {{"w", dst}}, "m"));
  EXPECT_EQ(dst.sum().item<float>(), 4.0f);
}

}  // namespace
}  // namespace reid::trainer
