// Image transforms with the reference (torchvision on PIL) semantics, on plain buffers:
//   train = resize (bicubic) -> flip -> pad -> random crop -> normalise -> random erasing (timm)
//   test  = resize (bilinear) -> normalise
// Randomness comes from Rng(seed, epoch, key), key = the sample's position in the epoch.
#pragma once

#include <cstdint>

#include "data/image.h"
#include "data/rng.h"

namespace reid::data {

enum class Interpolation { kBilinear, kBicubic };

// PIL's Image.resize for RGB uint8 (antialiased convolution, horizontal pass then vertical,
// 22-bit fixed-point coefficients, uint8 intermediate): bit-exact with Pillow's Resample.c.
void ResizePil(const Image& in, int out_height, int out_width, Interpolation interp, Image* out);

// Built by TransformOptionsFromConfig (data/options.h) from the config's input block, which holds
// the defaults (CLIP-ReID's 256x128, flip 0.5, padding 10, erasing 0.5, mean and std 0.5): none is
// restated here, and the zeros below are no pipeline (a 0x0 input, a zero std).
struct TransformOptions {
  int height = 0;  // network input (pixels)
  int width = 0;
  bool train = false;  // train pipeline (bicubic + augmentation) or test (bilinear)
  float flip_prob = 0;
  int padding = 0;
  float erasing_prob = 0;
  float mean[3] = {0, 0, 0};
  float std[3] = {0, 0, 0};
  bool dct_scaling = false;  // let libjpeg downscale large sources in the DCT domain
};

// What the random train transforms drew for one sample (exposed for tests).
struct Augmentation {
  bool flip = false;
  int top = 0, left = 0;  // crop offset in the padded image, in [0, 2 * padding]
  bool erase = false;
  int erase_top = 0, erase_left = 0, erase_h = 0, erase_w = 0;
};

// Draws flip and crop, then the erasing rectangle (timm RandomErasing: probability, 10 attempts,
// area in [0.02, 1/3] of the image, aspect in [0.3, 1/0.3] log-uniform), from `rng`.
Augmentation DrawAugmentation(const TransformOptions& opt, Rng* rng);

// Writes the normalised (3, H, W) float tensor of `resized` (already opt.height x opt.width) to
// `out`. Train: flip/pad/crop/erasing as drawn from Rng(seed, epoch, key); the erased pixels get
// N(0, 1) noise per pixel and channel. Test: normalise only.
void TransformToTensor(const Image& resized, const TransformOptions& opt, uint64_t seed,
                       int64_t epoch, int64_t key, float* out);

// Resize step of the pipeline: bicubic for train, bilinear for test (a no-op copy when the size
// already matches).
void ResizeForPipeline(const Image& decoded, const TransformOptions& opt, Image* out);

}  // namespace reid::data
