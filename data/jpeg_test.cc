// JPEG reading, decoding (exact against PIL, DCT-domain scaling, corrupt data) and encoding, on
// the golden files of testdata/make_golden.py.
#include "data/jpeg.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "base/status_test_util.h"
#include "data/test_util.h"
#include "data/transforms.h"

namespace reid::data {
namespace {

using testing::DecodeFile;
using testing::kTestDataDir;
using testing::MaxDiff;
using testing::ReadAll;

TEST(Jpeg, DecodeMatchesPil) {
  for (const char* name : {"a", "b", "c", "d"}) {
    const Image img = DecodeFile(std::string(name) + ".jpg");
    EXPECT_EQ(MaxDiff(img.pixels, ReadAll(kTestDataDir + name + "_decoded.rgb")), 0) << name;
  }
}

TEST(Jpeg, DctScalingPicksTheSmallestSufficientScale) {
  const Image full = DecodeFile("b.jpg");            // 90 x 200
  const Image scaled = DecodeFile("b.jpg", 32, 64);  // 3/8 -> 34 x 75
  EXPECT_EQ(full.height, 90);
  EXPECT_GE(scaled.height, 32);
  EXPECT_GE(scaled.width, 64);
  EXPECT_LT(scaled.width, 100);
  Image a, b;
  ResizePil(full, 32, 64, Interpolation::kBicubic, &a);
  ResizePil(scaled, 32, 64, Interpolation::kBicubic, &b);
  double mean = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) mean += std::abs(a.pixels[i] - b.pixels[i]);
  EXPECT_LT(mean / a.pixels.size(), 6.0) << "DCT-scaled decode drifts from the full decode";
  // A source smaller than the target is never scaled.
  EXPECT_EQ(DecodeFile("a.jpg", 256, 128).height, 128);
}

TEST(Jpeg, CorruptDataFailsWithAMessage) {
  JpegDecoder decoder;
  std::vector<uint8_t> bytes = ReadAll(kTestDataDir + "a.jpg");
  StatusOr<Image> img = decoder.Decode(bytes.data(), 0, 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message(), "empty file");
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  img = decoder.Decode(text.data(), text.size(), 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message(), "not a JPEG or PNG image (it starts with 68 65 6c 6c)");
  const std::vector<uint8_t> soi_only = {0xff, 0xd8, 'h', 'i'};  // SOI, then no JPEG
  img = decoder.Decode(soi_only.data(), soi_only.size(), 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().code(), Status::Code::kDataLoss) << img.status().message();
  bytes.resize(bytes.size() / 2);  // truncated
  img = decoder.Decode(bytes.data(), bytes.size(), 0, 0);
  ASSERT_FALSE(img.ok());
  EXPECT_EQ(img.status().message().rfind("cannot decode: ", 0), 0u) << img.status().message();
  EXPECT_EQ(img.status().exit_code(), 2);  // the file's fault, not ours
}

TEST(Jpeg, ReadFileBytesReadsWholeFilesAndNamesMissingOnes) {
  const std::string path = kTestDataDir + "a.jpg";
  StatusOr<std::vector<uint8_t>> bytes = ReadFileBytes(path);
  ASSERT_OK(bytes);
  EXPECT_EQ(*bytes, ReadAll(path));
  bytes = ReadFileBytes(kTestDataDir + "missing.jpg");
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().message(),
            kTestDataDir + "missing.jpg: cannot open (No such file or directory)");
  EXPECT_EQ(bytes.status().code(), Status::Code::kNotFound);
  // Images are bounded: a (sparse) file of kMaxImageBytes + 1 is refused from its size.
  char tmpl[] = "/tmp/reid_jpeg_test_XXXXXX";
  const int fd = mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(kMaxImageBytes) + 1), 0);
  close(fd);
  bytes = ReadFileBytes(tmpl);
  std::remove(tmpl);
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().message(),
            std::string(tmpl) + ": 67 MB is more than the 64 MiB limit for an image");
  // Not a regular file (base/file_util_test.cc has the FIFO and the links).
  bytes = ReadFileBytes("/dev/zero");
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().message(), "/dev/zero: not a regular file (a character device)");
}

TEST(Jpeg, EncodeRoundTripsWithinJpegLoss) {
  const Image src = DecodeFile("c.jpg");
  StatusOr<std::vector<uint8_t>> jpeg = EncodeJpeg(src, 95);
  ASSERT_OK(jpeg);
  JpegDecoder decoder;
  StatusOr<Image> back = decoder.Decode(jpeg->data(), jpeg->size(), 0, 0);
  ASSERT_OK(back);
  ASSERT_EQ(back->height, src.height);
  ASSERT_EQ(back->width, src.width);
  double mean = 0;
  for (size_t i = 0; i < src.pixels.size(); ++i) mean += std::abs(src.pixels[i] - back->pixels[i]);
  EXPECT_LT(mean / src.pixels.size(), 4.0);
}

}  // namespace
}  // namespace reid::data
