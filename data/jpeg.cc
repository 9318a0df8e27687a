// libjpeg-turbo decoding (with DCT-domain downscaling) and encoding.
#include "data/jpeg.h"

#include <turbojpeg.h>

#include <cstdio>
#include <memory>
#include <string>

namespace reid::data {
namespace {

constexpr int64_t kMaxJpegPixels = int64_t{1} << 26;  // 8192 x 8192

}  // namespace

StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) return Status::NotFound(path + ": cannot open");
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof(chunk), f.get())) > 0) {
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  if (std::ferror(f.get())) return Status::DataLoss(path + ": read error");
  return bytes;
}

JpegDecoder::JpegDecoder() : handle_(tjInitDecompress()) {}
JpegDecoder::~JpegDecoder() {
  if (handle_) tjDestroy(handle_);
}

StatusOr<Image> JpegDecoder::Decode(const uint8_t* data, size_t size, int min_height,
                                    int min_width) {
  if (handle_ == nullptr) return Status::Internal("cannot create a TurboJPEG decoder");
  if (size == 0) return Status::DataLoss("empty file");
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(handle_, data, size, &width, &height, &subsamp, &colorspace) != 0)
    return Status::DataLoss(std::string("not a JPEG: ") + tjGetErrorStr2(handle_));
  // The header's size is the file's claim: a 200-byte JPEG may declare 65535 x 65535. Person
  // crops are far smaller; refuse before allocating (and zero-filling) gigabytes.
  if (width <= 0 || height <= 0 || int64_t{width} * height > kMaxJpegPixels) {
    return Status::DataLoss("image of " + std::to_string(width) + "x" + std::to_string(height) +
                            " pixels (at most " + std::to_string(kMaxJpegPixels) + ")");
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
