// PIL-exact resizing and the train/test transforms, against PIL/torchvision outputs written by
// testdata/make_golden.py (JPEG decoding is jpeg_test.cc's). Tolerances: resize at most 1 uint8
// level per value (observed: 0); test pipeline at most one level after normalisation, 1/127.5
// (observed: 0).
#include "data/transforms.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "data/options.h"
#include "data/test_util.h"

namespace reid::data {
namespace {

using testing::DecodeFile;
using testing::MaxDiff;
using testing::ReadAll;
const std::string& kDir = testing::kTestDataDir;

TEST(Resize, MatchesPil) {
  struct Case {
    const char* name;
    const char* interp;
    int h, w;
  };
  for (const Case& c :
       {Case{"a", "bicubic", 256, 128}, Case{"a", "bilinear", 256, 128},
        Case{"b", "bicubic", 32, 64}, Case{"b", "bilinear", 48, 96}, Case{"c", "bicubic", 80, 160},
        Case{"c", "bilinear", 30, 70}, Case{"d", "bicubic", 96, 48}}) {
    const Image src = DecodeFile(std::string(c.name) + ".jpg");
    Image out;
    ResizePil(
        src, c.h, c.w,
        std::string(c.interp) == "bicubic" ? Interpolation::kBicubic : Interpolation::kBilinear,
        &out);
    const std::string golden = kDir + c.name + "_" + c.interp + "_" + std::to_string(c.h) + "x" +
                               std::to_string(c.w) + ".rgb";
    const int diff = MaxDiff(out.pixels, ReadAll(golden));
    EXPECT_LE(diff, 1) << golden;
    if (diff > 0) std::cout << golden << ": max difference " << diff << " levels\n";
  }
}

TEST(Transforms, TestPipelineMatchesTorchvision) {
  TransformOptions opt = TransformOptionsFromConfig(proto::InputConfig(), false);
  opt.height = 64;
  opt.width = 32;
  Image resized;
  ResizeForPipeline(DecodeFile("a.jpg"), opt, &resized);
  std::vector<float> ours(3 * 64 * 32);
  TransformToTensor(resized, opt, 1, 0, 0, ours.data());
  const std::vector<uint8_t> raw = ReadAll(kDir + "a_test_64x32.f32");
  ASSERT_EQ(raw.size(), ours.size() * sizeof(float));
  const float* ref = reinterpret_cast<const float*>(raw.data());
  float max_diff = 0;
  for (size_t i = 0; i < ours.size(); ++i)
    max_diff = std::max(max_diff, std::abs(ours[i] - ref[i]));
  EXPECT_LE(max_diff, 1.0f / 127.5f + 1e-6f);
  if (max_diff > 0) std::cout << "test pipeline: max difference " << max_diff << "\n";
}

Image Gradient(int h, int w) {
  Image img;
  img.Resize(h, w);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      for (int c = 0; c < 3; ++c)
        img.row(y)[3 * x + c] = static_cast<uint8_t>((x * 7 + y * 3 + c * 50) % 256);
    }
  }
  return img;
}

TEST(Transforms, TrainFlipPadCropAreConsistentWithTheDraw) {
  TransformOptions opt = TransformOptionsFromConfig(proto::InputConfig(), false);
  opt.train = true;
  opt.height = 32;
  opt.width = 16;
  opt.padding = 4;
  opt.erasing_prob = 0;
  const Image img = Gradient(32, 16);
  std::vector<float> out(3 * 32 * 16);
  int flips = 0;
  for (int key = 0; key < 200; ++key) {
    TransformToTensor(img, opt, 9, 3, key, out.data());
    Rng rng(9, 3, key, RngStream::kAugment);
    const Augmentation a = DrawAugmentation(opt, &rng);
    flips += a.flip;
    ASSERT_TRUE(a.top >= 0 && a.top <= 8 && a.left >= 0 && a.left <= 8);
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 16; ++x) {
        const int sy = y + a.top - 4, sx = x + a.left - 4;
        const bool inside = sy >= 0 && sy < 32 && sx >= 0 && sx < 16;
        const uint8_t u = inside ? img.row(sy)[3 * (a.flip ? 15 - sx : sx) + 1] : 0;
        ASSERT_FLOAT_EQ(out[32 * 16 + y * 16 + x], (u / 255.0f - 0.5f) / 0.5f)
            << "key " << key << " y " << y << " x " << x;
      }
    }
  }
  EXPECT_GT(flips, 70);
  EXPECT_LT(flips, 130);
}

TEST(Transforms, RandomErasingFollowsTimmRules) {
  TransformOptions opt = TransformOptionsFromConfig(proto::InputConfig(), false);
  opt.train = true;
  int erased = 0;
  const int n = 4000;
  for (int key = 0; key < n; ++key) {
    Rng rng(5, 1, key, RngStream::kAugment);
    const Augmentation a = DrawAugmentation(opt, &rng);
    if (!a.erase) continue;
    ++erased;
    const double area = a.erase_h * a.erase_w / (256.0 * 128.0);
    ASSERT_GT(area, 0.015);
    ASSERT_LT(area, 0.36);
    ASSERT_TRUE(a.erase_w < 128 && a.erase_h < 256);
    ASSERT_TRUE(a.erase_top + a.erase_h <= 256 && a.erase_left + a.erase_w <= 128);
  }
  // Probability 0.5, minus the rare case where all 10 attempts fail.
  EXPECT_GT(erased, n * 0.44);
  EXPECT_LT(erased, n * 0.53);
}

TEST(Transforms, ErasedPixelsAreStandardNormalNoiseAndDeterministic) {
  TransformOptions opt = TransformOptionsFromConfig(proto::InputConfig(), false);
  opt.train = true;
  opt.erasing_prob = 1;
  const Image img = Gradient(256, 128);
  std::vector<float> a(3 * 256 * 128), b(a.size()), c(a.size());
  int key = 0;
  Augmentation aug;
  do {
    Rng rng(2, 0, ++key, RngStream::kAugment);
    aug = DrawAugmentation(opt, &rng);
  } while (!aug.erase);
  TransformToTensor(img, opt, 2, 0, key, a.data());
  TransformToTensor(img, opt, 2, 0, key, b.data());
  TransformToTensor(img, opt, 2, 1, key, c.data());
  EXPECT_EQ(a, b);  // same (seed, epoch, key): same output
  EXPECT_NE(a, c);  // another epoch: another draw
  double sum = 0, sq = 0;
  int count = 0;
  for (int ch = 0; ch < 3; ++ch) {
    for (int y = aug.erase_top; y < aug.erase_top + aug.erase_h; ++y) {
      for (int x = aug.erase_left; x < aug.erase_left + aug.erase_w; ++x) {
        const float v = a[ch * 256 * 128 + y * 128 + x];
        sum += v;
        sq += v * v;
        ++count;
      }
    }
  }
  const double mean = sum / count, var = sq / count - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(var, 1.0, 0.1);
}

}  // namespace
}  // namespace reid::data
