// JPEG decoding, PIL-exact resizing and the train/test transforms, against PIL/torchvision
// outputs written by testdata/make_golden.py. Tolerances: decode exact (0 levels); resize at most
// 1 uint8 level per value (observed: 0); test pipeline at most one level after normalisation,
// 1/127.5 (observed: 0).
#include "data/transforms.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "data/jpeg.h"
#include "data/options.h"

namespace reid::data {
namespace {

const std::string kDir = "data/testdata/";

std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

Image DecodeFile(const std::string& name, int min_h = 0, int min_w = 0) {
  JpegDecoder decoder;
  const std::vector<uint8_t> bytes = ReadAll(kDir + name);
  Image img;
  std::string error;
  EXPECT_TRUE(decoder.Decode(bytes.data(), bytes.size(), min_h, min_w, &img, &error)) << error;
  return img;
}

int MaxDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  int m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST(Jpeg, DecodeMatchesPil) {
  for (const char* name : {"a", "b", "c", "d"}) {
    const Image img = DecodeFile(std::string(name) + ".jpg");
    EXPECT_EQ(MaxDiff(img.pixels, ReadAll(kDir + name + "_decoded.rgb")), 0) << name;
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
  Image img;
  std::string error;
  std::vector<uint8_t> bytes = ReadAll(kDir + "a.jpg");
  EXPECT_FALSE(decoder.Decode(bytes.data(), 0, 0, 0, &img, &error));
  EXPECT_NE(error, "");
  const std::vector<uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_FALSE(decoder.Decode(text.data(), text.size(), 0, 0, &img, &error));
  bytes.resize(bytes.size() / 2);  // truncated
  error.clear();
  EXPECT_FALSE(decoder.Decode(bytes.data(), bytes.size(), 0, 0, &img, &error));
  EXPECT_NE(error, "");
}

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
  TransformOptions opt;
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
  TransformOptions opt;
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
  TransformOptions opt;
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
  TransformOptions opt;
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

TEST(Options, FromConfigUseTheSchemaValues) {
  proto::ReidConfig cfg;
  cfg.mutable_input()->mutable_size_test()->set_height(384);
  cfg.mutable_data()->set_cache_budget_mb(3);
  cfg.mutable_data()->set_dataset(proto::DataConfig::SYNTHETIC);
  const TransformOptions train = TransformOptionsFromConfig(cfg.input(), true);
  const TransformOptions test = TransformOptionsFromConfig(cfg.input(), false);
  EXPECT_TRUE(train.train);
  EXPECT_EQ(train.height, 256);
  EXPECT_EQ(train.width, 128);
  EXPECT_EQ(train.padding, 10);
  EXPECT_FLOAT_EQ(train.erasing_prob, 0.5f);
  EXPECT_FLOAT_EQ(train.mean[2], 0.5f);
  EXPECT_FALSE(test.train);
  EXPECT_EQ(test.height, 384);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).cache_budget_bytes, 3 << 20);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).seed, 1234u);
  EXPECT_EQ(DatasetKindFromConfig(cfg.data()), DatasetKind::kMarket1501);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).ids, 64);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).width, 64);
}

}  // namespace
}  // namespace reid::data
