// JPEG decoding and encoding with libjpeg-turbo's TurboJPEG API; decoding can let libjpeg
// downscale in the DCT domain (1/2 ... 1/8) when the source is much larger than the target.
// The decoder also takes PNG files (data/png.h), told apart by their first bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/image.h"

namespace reid::data {

// The largest image file read (person crops are kilobytes; a 8192 x 8192 photo is ~30 MB as JPEG).
constexpr uint64_t kMaxImageBytes = uint64_t{64} << 20;  // 64 MiB
// The largest image decoded, from its header's width x height, checked before allocating.
constexpr int64_t kMaxImagePixels = int64_t{1} << 26;  // 8192 x 8192

// Reads a whole image file through base::ReadRegularFileBytes: only a regular file (symbolic
// links followed) of at most kMaxImageBytes, so that a FIFO, a device or a 4 GB file named like
// an image fails at once instead of hanging or filling memory. NotFound ("PATH: cannot open
// (REASON)") for a missing file; InvalidArgument ("PATH: not a regular file (a FIFO)", "PATH: 70 MB
// is more than the 64 MiB limit for an image") or DataLoss ("PATH: read error (REASON)").
StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);

// One decoder per thread (a TurboJPEG handle is not thread-safe). Decodes JPEG and PNG.
class JpegDecoder {
 public:
  JpegDecoder();
  ~JpegDecoder();
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;

  // Decodes to RGB. With min_height/min_width > 0, libjpeg's DCT scaling picks the smallest scale
  // whose output is still at least min_height x min_width (no scaling when the source is smaller).
  // Truncated or corrupt data (libjpeg warnings included) is a DataLoss status (the message does
  // not name the file: the caller knows it). Data that starts with the PNG signature is decoded
  // by DecodePng (full size: PNG has no scaled decoding); data that starts with neither JPEG's SOI
  // marker nor PNG's signature is DataLoss "not a JPEG or PNG image (it starts with ...)". At most
  // kMaxImagePixels either way.
  StatusOr<Image> Decode(const uint8_t* data, size_t size, int min_height, int min_width);

 private:
  void* handle_;
};

// The name for callers that decode any image file (JPEG or PNG).
using ImageDecoder = JpegDecoder;

// Encodes RGB to a baseline JPEG (4:2:0 chroma, `quality` 1..100). Internal when libjpeg fails.
StatusOr<std::vector<uint8_t>> EncodeJpeg(const Image& image, int quality);

}  // namespace reid::data
