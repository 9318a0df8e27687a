// Helpers shared by the data tests: the golden files of data/testdata/ (written by
// make_golden.py), read whole or decoded, and their comparison.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "base/status_test_util.h"
#include "data/image.h"
#include "data/jpeg.h"

namespace reid::data::testing {

// Tests run from the source root.
inline const std::string kTestDataDir = "data/testdata/";

inline std::vector<uint8_t> ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// data/testdata/`name` decoded (DCT-scaled to at least min_h x min_w when they are > 0); an empty
// image and a test failure when it does not decode.
inline Image DecodeFile(const std::string& name, int min_h = 0, int min_w = 0) {
  JpegDecoder decoder;
  const std::vector<uint8_t> bytes = ReadAll(kTestDataDir + name);
  StatusOr<Image> img = decoder.Decode(bytes.data(), bytes.size(), min_h, min_w);
  EXPECT_OK(img) << name;
  return img.ok() ? *std::move(img) : Image();
}

// The largest absolute difference of two equally long byte arrays.
inline int MaxDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  int m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace reid::data::testing
