// Fuzzes JPEG decoding (libjpeg-turbo with our size checks and DCT scaling) and the transforms
// that follow it in the data loader (PIL-exact resize, train augmentation, normalisation).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/jpeg.h"
#include "data/transforms.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static reid::data::JpegDecoder decoder;
  const reid::StatusOr<reid::data::Image> image = decoder.Decode(data, size, 64, 32);
  if (!image.ok()) return 0;
  // The pipeline's values (CLIP-ReID's: flip, erasing, mean and std 0.5) at a small size; the
  // fuzz build has no config, so they are set here.
  reid::data::TransformOptions opt;
  opt.height = 64;
  opt.width = 32;
  opt.padding = 4;
  opt.flip_prob = 0.5f;
  opt.erasing_prob = 0.5f;
  for (int c = 0; c < 3; ++c) opt.mean[c] = opt.std[c] = 0.5f;
  opt.dct_scaling = true;
  opt.train = size % 2 == 0;
  reid::data::Image resized;
  reid::data::ResizeForPipeline(*image, opt, &resized);
  std::vector<float> out(3 * 64 * 32);
  reid::data::TransformToTensor(resized, opt, 7, 0, static_cast<int64_t>(size), out.data());
  return 0;
}
