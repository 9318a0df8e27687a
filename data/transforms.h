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

struct TransformOptions {
  int height = 256;  // network input (pixels)
  int width = 128;
  bool train = false;  // train pipeline (bicubic + augmentation) or test (bilinear)
  float flip_prob = 0.5f;
  int padding = 10;
  float erasing_prob = 0.5f;
  float mean[3] = {0.5f, 0.5f, 0.5f};
  float std[3] = {0.5f, 0.5f, 0.5f};
  bool dct_scaling = true;  // let libjpeg downscale large sources in the DCT domain
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
