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
  reid::data::TransformOptions opt;
  opt.height = 64;
  opt.width = 32;
  opt.padding = 4;
  opt.train = size % 2 == 0;
  reid::data::Image resized;
  reid::data::ResizeForPipeline(*image, opt, &resized);
  std::vector<float> out(3 * 64 * 32);
  reid::data::TransformToTensor(resized, opt, 7, 0, static_cast<int64_t>(size), out.data());
  return 0;
}
