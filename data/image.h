// Images as plain buffers (no torch): interleaved 8-bit RGB, row-major (H, W, 3).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace reid::data {

struct Image {
  int height = 0;
  int width = 0;
  std::vector<uint8_t> pixels;  // (H, W, 3) RGB

  void Resize(int h, int w) {
    height = h;
    width = w;
    pixels.resize(static_cast<size_t>(h) * w * 3);
  }
  size_t bytes() const { return pixels.size(); }
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * 3; }
};

}  // namespace reid::data
