// Fuzzes PNG decoding (libpng with our transforms to 8-bit RGB, the size check and the setjmp
// error path; CRC and Adler-32 checks are off in this build so mutations reach the decoder) and
// the test transforms that follow it; a decoded image must survive an encode/decode round trip.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "data/jpeg.h"
#include "data/png.h"
#include "data/transforms.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const reid::StatusOr<reid::data::Image> image =
      reid::data::DecodePng(data, size, reid::data::kMaxImagePixels);
  if (!image.ok()) {
    if (image.status().message().empty()) __builtin_trap();  // errors say what
    return 0;
  }
  if (image->pixels.size() != static_cast<size_t>(image->height) * image->width * 3)
    __builtin_trap();
  // The pipeline's values (CLIP-ReID's: flip, erasing, mean and std 0.5) at a small size; the
  // fuzz build has no config, so they are set here.
  reid::data::TransformOptions opt;
  opt.height = 64;
  opt.width = 32;
  opt.padding = 10;
  opt.flip_prob = 0.5f;
  opt.erasing_prob = 0.5f;
  for (int c = 0; c < 3; ++c) opt.mean[c] = opt.std[c] = 0.5f;
  opt.dct_scaling = true;
  reid::data::Image resized;
  reid::data::ResizeForPipeline(*image, opt, &resized);
  std::vector<float> out(3 * 64 * 32);
  reid::data::TransformToTensor(resized, opt, 7, 0, 0, out.data());
  // Lossless: what we decoded, encoded and decoded again, is the same image (small ones only,
  // to keep the run fast).
  if (image->pixels.size() <= (1u << 20)) {
    const reid::StatusOr<std::vector<uint8_t>> png = reid::data::EncodePng(*image);
    if (!png.ok()) __builtin_trap();
    const reid::StatusOr<reid::data::Image> again =
        reid::data::DecodePng(png->data(), png->size(), reid::data::kMaxImagePixels);
    if (!again.ok() || again->pixels != image->pixels) __builtin_trap();
  }
  return 0;
}
