// JPEG decoding and encoding with libjpeg-turbo's TurboJPEG API; decoding can let libjpeg
// downscale in the DCT domain (1/2 ... 1/8) when the source is much larger than the target.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace reid::data {

// Reads a whole file. Returns false (and sets *error to a message naming the path) on failure.
bool ReadFileBytes(const std::string& path, std::vector<uint8_t>* bytes, std::string* error);

// One decoder per thread (a TurboJPEG handle is not thread-safe).
class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Decodes to RGB. With min_height/min_width > 0, libjpeg's DCT scaling picks the smallest scale
  // whose output is still at least min_height x min_width (no scaling when the source is smaller).
  // Truncated or corrupt data (libjpeg warnings included) is a failure: returns false with *error.
  bool Decode(const uint8_t* data, size_t size, int min_height, int min_width, Image* out,
              std::string* error);

 private:
  void* handle_;
};

// Encodes RGB to a baseline JPEG (4:2:0 chroma, `quality` 1..100).
bool EncodeJpeg(const Image& image, int quality, std::vector<uint8_t>* out, std::string* error);

}  // namespace reid::data
