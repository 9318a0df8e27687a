// libjpeg-turbo decoding (with DCT-domain downscaling) and encoding; PNG goes to data/png.cc.
#include "data/jpeg.h"

#include <turbojpeg.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "base/file_util.h"
#include "data/png.h"

namespace reid::data {
namespace {

// "ff d8 00 10": the first bytes of data that is neither JPEG nor PNG, for its message.
std::string FirstBytes(const uint8_t* data, size_t size) {
  std::string out;
  char hex[4];
  for (size_t i = 0; i < std::min<size_t>(size, 4); ++i) {
    std::snprintf(hex, sizeof(hex), i ? " %02x" : "%02x", data[i]);
    out += hex;
  }
  return out;
}

}  // namespace

StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  return base::ReadRegularFileBytes(path, kMaxImageBytes, "an image");
}

JpegDecoder::JpegDecoder() : handle_(tjInitDecompress()) {}
JpegDecoder::~JpegDecoder() {
  if (handle_) tjDestroy(handle_);
}

StatusOr<Image> JpegDecoder::Decode(const uint8_t* data, size_t size, int min_height,
                                    int min_width) {
  if (handle_ == nullptr) return Status::Internal("cannot create a TurboJPEG decoder");
  if (size == 0) return Status::DataLoss("empty file");
  if (IsPng(data, size)) return DecodePng(data, size, kMaxImagePixels);
  // Every JPEG starts with the SOI marker (ff d8).
  if (size < 2 || data[0] != 0xff || data[1] != 0xd8) {
    return Status::DataLoss("not a JPEG or PNG image (it starts with " + FirstBytes(data, size) +
                            ")");
  }
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(handle_, data, size, &width, &height, &subsamp, &colorspace) != 0)
    return Status::DataLoss(std::string("not a JPEG: ") + tjGetErrorStr2(handle_));
  // The header's size is the file's claim: a 200-byte JPEG may declare 65535 x 65535. Person
  // crops are far smaller; refuse before allocating (and zero-filling) gigabytes.
  if (width <= 0 || height <= 0 || int64_t{width} * height > kMaxImagePixels) {
    return Status::DataLoss("image of " + std::to_string(width) + "x" + std::to_string(height) +
                            " pixels (at most " + std::to_string(kMaxImagePixels) + ")");
  }
  int out_w = width, out_h = height;
  if (min_height > 0 && min_width > 0) {
    int n = 0;
    const tjscalingfactor* factors = tjGetScalingFactors(&n);
    for (int i = 0; i < n; ++i) {
      const tjscalingfactor f = factors[i];
      if (f.num > f.denom) continue;
      const int w = TJSCALED(width, f), h = TJSCALED(height, f);
      if (w >= min_width && h >= min_height && w < out_w) {
        out_w = w;
        out_h = h;
      }
    }
  }
  Image out;
  out.Resize(out_h, out_w);
  // Warnings (e.g. a truncated file, which libjpeg pads with grey) count as failures.
  if (tjDecompress2(handle_, data, size, out.pixels.data(), out_w, 0, out_h, TJPF_RGB,
                    TJFLAG_STOPONWARNING) != 0) {
    return Status::DataLoss(std::string("cannot decode: ") + tjGetErrorStr2(handle_));
  }
  return out;
}

StatusOr<std::vector<uint8_t>> EncodeJpeg(const Image& image, int quality) {
  tjhandle h = tjInitCompress();
  if (h == nullptr) return Status::Internal("cannot create a TurboJPEG encoder");
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(h, image.pixels.data(), image.width, 0, image.height, TJPF_RGB, &buf,
                             &size, TJSAMP_420, quality, 0);
  StatusOr<std::vector<uint8_t>> result =
      rc == 0 ? StatusOr<std::vector<uint8_t>>(std::vector<uint8_t>(buf, buf + size))
              : StatusOr<std::vector<uint8_t>>(
                    Status::Internal(std::string("cannot encode: ") + tjGetErrorStr2(h)));
  tjFree(buf);
  tjDestroy(h);
  return result;
}

}  // namespace reid::data
