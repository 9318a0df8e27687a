// JPEG decoding and encoding with libjpeg-turbo's TurboJPEG API; decoding can let libjpeg
// downscale in the DCT domain (1/2 ... 1/8) when the source is much larger than the target.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/image.h"

namespace reid::data {

// Reads a whole file. NotFound ("PATH: cannot open") or DataLoss ("PATH: read error") on failure.
StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);

// One decoder per thread (a TurboJPEG handle is not thread-safe).
class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Decodes to RGB. With min_height/min_width > 0, libjpeg's DCT scaling picks the smallest scale
  // whose output is still at least min_height x min_width (no scaling when the source is smaller).
  // Truncated or corrupt data (libjpeg warnings included) is a DataLoss status (the message does
  // not name the file: the caller knows it).
  StatusOr<Image> Decode(const uint8_t* data, size_t size, int min_height, int min_width);

 private:
  void* handle_;
};

// Encodes RGB to a baseline JPEG (4:2:0 chroma, `quality` 1..100). Internal when libjpeg fails.
StatusOr<std::vector<uint8_t>> EncodeJpeg(const Image& image, int quality);

}  // namespace reid::data
