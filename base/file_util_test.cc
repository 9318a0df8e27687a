// Bounded regular-file reads: what is refused before anything is read (FIFOs, devices,
// directories, oversize files, symbolic links to any of them), and what is read.
#include "base/file_util.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/status_test_util.h"

namespace reid::base {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "reid_file_util_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }

  fs::path dir_;
};

// Expects `s` to be InvalidArgument with exactly `message`.
void ExpectInvalid(const Status& s, const std::string& message) {
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << s.message();
  EXPECT_EQ(s.message(), message);
}

TEST_F(FileUtilTest, ReadsRegularFilesWhole) {
  const std::string path = Write("a.txt", std::string("hello\0world", 11));
  StatusOr<std::string> text = ReadRegularFile(path, 11);
  ASSERT_OK(text);
  EXPECT_EQ(*text, std::string("hello\0world", 11));
  StatusOr<std::vector<uint8_t>> bytes = ReadRegularFileBytes(path, 1 << 20);
  ASSERT_OK(bytes);
  EXPECT_EQ(bytes->size(), 11u);
  EXPECT_EQ((*bytes)[6], 'w');
  EXPECT_OK(CheckRegularFile(path, 11));
  // Empty files are regular files too.
  text = ReadRegularFile(Write("empty", ""), 0);
  ASSERT_OK(text);
  EXPECT_TRUE(text->empty());
}

TEST_F(FileUtilTest, RefusesFilesOverTheLimitBeforeReading) {
  const std::string path = Write("a.txt", "twelve bytes");
  ExpectInvalid(ReadRegularFile(path, 11).status(),
                path + ": 12 bytes is more than the 11 bytes limit for a file");
  ExpectInvalid(CheckRegularFile(path, 11, "a list"),
                path + ": 12 bytes is more than the 11 bytes limit for a list");
  // A sparse 5.2 GB file: refused from its size, without reading or allocating it.
  const std::string big = (dir_ / "big.jpg").string();
  const int fd = open(big.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, 5'200'000'000), 0);
  close(fd);
  const auto start = std::chrono::steady_clock::now();
  ExpectInvalid(ReadRegularFileBytes(big, uint64_t{64} << 20, "an image").status(),
                big + ": 5.2 GB is more than the 64 MiB limit for an image");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST_F(FileUtilTest, RefusesWhatIsNotARegularFile) {
  const std::string fifo = (dir_ / "fifo.jpg").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // No writer ever opens the FIFO: a blocking open or read would hang here.
  ExpectInvalid(ReadRegularFile(fifo, 1 << 20).status(), fifo + ": not a regular file (a FIFO)");
  ExpectInvalid(CheckRegularFile(fifo, 1 << 20), fifo + ": not a regular file (a FIFO)");
  ExpectInvalid(ReadRegularFile("/dev/zero", 1 << 20).status(),
                "/dev/zero: not a regular file (a character device)");
  ExpectInvalid(ReadRegularFile(dir_.string(), 1 << 20).status(),
                dir_.string() + ": not a regular file (a directory)");
}

TEST_F(FileUtilTest, FollowsSymbolicLinksToRegularFilesOnly) {
  const std::string target = Write("target.txt", "content");
  const std::string good = (dir_ / "good.jpg").string(), zero = (dir_ / "zero.jpg").string();
  fs::create_symlink(target, good);
  fs::create_symlink("/dev/zero", zero);
  StatusOr<std::string> text = ReadRegularFile(good, 100);
  ASSERT_OK(text);
  EXPECT_EQ(*text, "content");
  ExpectInvalid(ReadRegularFile(zero, uint64_t{1} << 40).status(),
                zero + ": not a regular file (a character device)");
  // A link to itself: refused, not followed forever.
  const std::string loop = (dir_ / "loop.jpg").string();
  fs::create_symlink(loop, loop);
  const Status looped = ReadRegularFile(loop, 100).status();
  EXPECT_EQ(looped.code(), Status::Code::kInvalidArgument) << looped.message();
  EXPECT_EQ(looped.message().rfind(loop + ": cannot open (", 0), 0u) << looped.message();
}

TEST_F(FileUtilTest, MissingFilesAreNotFound) {
  const std::string missing = (dir_ / "missing.jpg").string();
  const Status s = ReadRegularFile(missing, 100).status();
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_EQ(s.message(), missing + ": cannot open (No such file or directory)");
  EXPECT_EQ(CheckRegularFile(missing + "/x", 100).code(), Status::Code::kNotFound);
}

TEST_F(FileUtilTest, NoticesAFileThatChangesSizeWhileRead) {
  // /proc files are regular files whose fstat size (0) is not their length.
  const Status s = ReadRegularFile("/proc/self/status", 1 << 20).status();
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), "/proc/self/status: changed size while being read");
}

TEST_F(FileUtilTest, ReadsInBoundedChunks) {
  std::string content(10'000, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7);
  const std::string path = Write("big.bin", content);
  std::string seen;
  size_t largest = 0, calls = 0;
  ASSERT_OK(ReadRegularFileInChunks(path, 10'000, "", 4096, [&](const char* data, size_t n) {
    seen.append(data, n);
    largest = std::max(largest, n);
    ++calls;
    return Status::Ok();
  }));
  EXPECT_EQ(seen, content);
  EXPECT_EQ(largest, 4096u);
  EXPECT_EQ(calls, 3u);
  // The consumer's error stops the read; the checks of ReadRegularFile come first.
  calls = 0;
  Status s = ReadRegularFileInChunks(path, 10'000, "", 4096, [&](const char*, size_t) {
    ++calls;
    return Status::DataLoss("stop");
  });
  EXPECT_EQ(s.message(), "stop");
  EXPECT_EQ(calls, 1u);
  auto never = [](const char*, size_t) -> Status {
    ADD_FAILURE() << "read a file that should be refused";
    return Status::Ok();
  };
  ExpectInvalid(ReadRegularFileInChunks(path, 9'999, "a checkpoint file", 4096, never),
                path + ": 10 kB is more than the 9999 bytes limit for a checkpoint file");
  ExpectInvalid(ReadRegularFileInChunks("/dev/zero", 1 << 20, "", 4096, never),
                "/dev/zero: not a regular file (a character device)");
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectInvalid(ReadRegularFileInChunks(fifo, 1 << 20, "", 4096, never),
                fifo + ": not a regular file (a FIFO)");
}

TEST_F(FileUtilTest, OpensRegularFilesAsDescriptorsAndStreams) {
  const std::string path = Write("lines.txt", "one\ntwo\n");
  uint64_t size = 0;
  StatusOr<int> fd = OpenRegularFile(path, 100, "", &size);
  ASSERT_OK(fd);
  EXPECT_EQ(size, 8u);
  char buf[16];
  EXPECT_EQ(read(*fd, buf, sizeof(buf)), 8);
  close(*fd);
  StatusOr<std::unique_ptr<std::istream>> in = OpenRegularFileStream(path, 100, "", &size);
  ASSERT_OK(in);
  std::string a, b, c;
  EXPECT_TRUE(std::getline(**in, a) && std::getline(**in, b));
  EXPECT_FALSE(std::getline(**in, c));
  EXPECT_EQ(a + b, "onetwo");
  // The checks of ReadRegularFile: nothing that blocks or never ends is opened for reading.
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectInvalid(OpenRegularFileStream(fifo, 100).status(), fifo + ": not a regular file (a FIFO)");
  ExpectInvalid(OpenRegularFile("/dev/zero", 100).status(),
                "/dev/zero: not a regular file (a character device)");
  ExpectInvalid(OpenRegularFileStream(path, 7, "a list").status(),
                path + ": 8 bytes is more than the 7 bytes limit for a list");
  EXPECT_EQ(OpenRegularFile((dir_ / "missing").string(), 100).status().code(),
            Status::Code::kNotFound);
}

TEST_F(FileUtilTest, OutputFilesMayBeAbsentOrRegular) {
  ASSERT_OK(CheckOutputFile((dir_ / "new.json").string()));
  ASSERT_OK(CheckOutputFile(Write("old.json", "{}")));
  const std::string fifo = (dir_ / "fifo.json").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  ExpectInvalid(CheckOutputFile(fifo), fifo + ": exists and is not a regular file (a FIFO)");
  ExpectInvalid(CheckOutputFile(dir_.string()),
                dir_.string() + ": exists and is not a regular file (a directory)");
  ExpectInvalid(CheckOutputFile("/dev/null"),
                "/dev/null: exists and is not a regular file (a character device)");
  const std::string orphan = (dir_ / "no" / "such" / "x.json").string();
  ExpectInvalid(CheckOutputFile(orphan),
                orphan + ": folder " + (dir_ / "no" / "such").string() + " does not exist");
}

TEST(FormatBytes, SizesAndLimits) {
  EXPECT_EQ(FormatBytes(0), "0 bytes");
  EXPECT_EQ(FormatBytes(1), "1 byte");
  EXPECT_EQ(FormatBytes(999), "999 bytes");
  EXPECT_EQ(FormatBytes(1000), "1.0 kB");
  EXPECT_EQ(FormatBytes(67'108'865), "67 MB");
  EXPECT_EQ(FormatBytes(5'200'000'000), "5.2 GB");
  EXPECT_EQ(FormatBytes(999'999), "1.0 MB");
  EXPECT_EQ(FormatLimit(64 << 20), "64 MiB");
  EXPECT_EQ(FormatLimit(uint64_t{1} << 30), "1 GiB");
  EXPECT_EQ(FormatLimit(3072), "3 KiB");
  EXPECT_EQ(FormatLimit(1536), "1536 bytes");
  EXPECT_EQ(FormatLimit(1000), "1000 bytes");
}

}  // namespace
}  // namespace reid::base
