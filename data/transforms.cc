// PIL-exact resampling and the train/test transforms of the reference pipeline.
#include "data/transforms.h"

#include <glog/logging.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace reid::data {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

// The hot loops are also compiled for AVX2 (32-bit integer multiplies in 8 lanes), chosen at
// load time on CPUs that have it; the baseline x86-64 version runs elsewhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define REID_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REID_SIMD_CLONES
#endif

double BilinearFilter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double BicubicFilter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output position, the first input
// index, the tap count and ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;  // (out_size, ksize)
};

Coeffs PrecomputeCoeffs(int in_size, int out_size, Interpolation interp) {
  const double support_base = interp == Interpolation::kBicubic ? 2.0 : 1.0;
  double (*filter)(double) = interp == Interpolation::kBicubic ? BicubicFilter : BilinearFilter;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = support_base * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(0, static_cast<int>(center - support + 0.5));
    const int xmax = std::min(in_size, static_cast<int>(center + support + 0.5)) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = filter((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double v = ww != 0.0 ? w[x] / ww : w[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t Clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// Vertical pass; c.first is relative to `in`'s first row. Accumulates whole rows (vectorised;
// raw pointers because uint8 stores may alias anything, which would block vectorisation).
REID_SIMD_CLONES void ResampleVertical(const Image& in, const Coeffs& c, int first_offset,
                                       int out_h, Image* out) {
  const int row_len = in.width * 3;
  out->Resize(out_h, in.width);
  std::vector<int32_t> acc_buf(row_len);
  int32_t* __restrict acc = acc_buf.data();
  const uint8_t* __restrict in_data = in.pixels.data();
  uint8_t* __restrict out_data = out->pixels.data();
  const int32_t* ks = c.k.data();
  const int ksize = c.ksize;
  for (int yy = 0; yy < out_h; ++yy) {
    for (int i = 0; i < row_len; ++i) acc[i] = 1 << (kPrecisionBits - 1);
    const int32_t* k = ks + static_cast<size_t>(yy) * ksize;
    const int first = c.first[yy] - first_offset, count = c.count[yy];
    for (int y = 0; y < count; ++y) {
      const uint8_t* __restrict src = in_data + static_cast<size_t>(first + y) * row_len;
      const int32_t ky = k[y];
      for (int i = 0; i < row_len; ++i) acc[i] += src[i] * ky;
    }
    uint8_t* __restrict dst = out_data + static_cast<size_t>(yy) * row_len;
    for (int i = 0; i < row_len; ++i) dst[i] = Clip8(acc[i]);
  }
}

// Pixel transpose of rows [row0, row0 + rows): out(x, y) = in(row0 + y, x).
void TransposePixels(const Image& in, int row0, int rows, Image* out) {
  const int w = in.width;
  out->Resize(w, rows);
  const uint8_t* __restrict src = in.pixels.data() + static_cast<size_t>(row0) * w * 3;
  uint8_t* __restrict dst = out->pixels.data();
  const size_t out_row = static_cast<size_t>(rows) * 3;
  for (int y = 0; y < rows; ++y) {
    const uint8_t* __restrict s = src + static_cast<size_t>(y) * w * 3;
    uint8_t* __restrict d = dst + 3 * y;
    for (int x = 0; x < w; ++x) {
      d[x * out_row] = s[3 * x];
      d[x * out_row + 1] = s[3 * x + 1];
      d[x * out_row + 2] = s[3 * x + 2];
    }
  }
}

// Horizontal pass over rows [row0, row0 + rows) of `in`: done as a vertical pass on the
// transposed rows (same integer arithmetic, so the same result, but whole-row vector loops).
void ResampleHorizontal(const Image& in, int row0, int rows, const Coeffs& c, int out_w,
                        Image* out) {
  Image t, u;
  TransposePixels(in, row0, rows, &t);
  ResampleVertical(t, c, 0, out_w, &u);
  TransposePixels(u, 0, u.height, out);
}

// Standard normal quantiles Q[i] = inverse CDF of (i / 65536) for i = 1..65535, Q[0] and
// Q[65536] at the 0.5 / 65536 tails (+-4.3): noise is drawn by inverse transform with linear
// interpolation, 16 + 16 random bits per value, several times faster than Box-Muller. The
// distribution is N(0, 1) truncated at +-4.3 (a 1.5e-5 tail mass).
const float* NormalQuantiles() {
  static const std::vector<float> table = [] {
    constexpr int kN = 65536;
    std::vector<float> t(kN + 1);
    auto solve = [](double p, double x) {  // Newton on Phi(x) = p from a nearby start
      for (int it = 0; it < 6; ++it) {
        const double cdf = 0.5 * std::erfc(-x / std::sqrt(2.0));
        const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
        x -= (cdf - p) / pdf;
      }
      return x;
    };
    double x = 0;
    for (int i = kN / 2; i < kN; ++i) t[i] = static_cast<float>(x = solve(i / double(kN), x));
    x = 0;
    for (int i = kN / 2; i > 0; --i) t[i] = static_cast<float>(x = solve(i / double(kN), x));
    t[0] = static_cast<float>(solve(0.5 / kN, t[1]));
    t[kN] = -t[0];
    return t;
  }();
  return table.data();
}

// timm's per-pixel mode: N(0, 1) noise over the rectangle, channel by channel ((C, h, w) order).
void FillErasing(const Augmentation& a, int W, size_t plane, Rng* rng, float* out) {
  const float* q = NormalQuantiles();
  constexpr float kFrac = 1.0f / 65536.0f;
  for (int c = 0; c < 3; ++c) {
    for (int y = a.erase_top; y < a.erase_top + a.erase_h; ++y) {
      float* row = out + c * plane + static_cast<size_t>(y) * W + a.erase_left;
      for (int x = 0; x < a.erase_w; x += 2) {  // two normals per 64 random bits
        const uint64_t r = rng->Next();
        const uint32_t i0 = r >> 48, f0 = (r >> 32) & 0xFFFF, i1 = (r >> 16) & 0xFFFF,
                       f1 = r & 0xFFFF;
        row[x] = q[i0] + (q[i0 + 1] - q[i0]) * (f0 * kFrac);
        if (x + 1 < a.erase_w) row[x + 1] = q[i1] + (q[i1 + 1] - q[i1]) * (f1 * kFrac);
      }
    }
  }
}

}  // namespace

void ResizePil(const Image& in, int out_height, int out_width, Interpolation interp, Image* out) {
  const bool need_h = out_width != in.width;
  const bool need_v = out_height != in.height;
  if (!need_h && !need_v) {
    *out = in;
    return;
  }
  const Coeffs cv = PrecomputeCoeffs(in.height, out_height, interp);
  if (!need_h) {
    ResampleVertical(in, cv, 0, out_height, out);
    return;
  }
  const Coeffs ch = PrecomputeCoeffs(in.width, out_width, interp);
  // Like Pillow, the horizontal pass only covers the rows the vertical pass reads.
  const int ybox_first = need_v ? cv.first[0] : 0;
  const int ybox_last = need_v ? cv.first[out_height - 1] + cv.count[out_height - 1] : in.height;
  if (!need_v) {
    ResampleHorizontal(in, 0, in.height, ch, out_width, out);
    return;
  }
  Image temp;
  ResampleHorizontal(in, ybox_first, ybox_last - ybox_first, ch, out_width, &temp);
  ResampleVertical(temp, cv, ybox_first, out_height, out);
}

void ResizeForPipeline(const Image& decoded, const TransformOptions& opt, Image* out) {
  CHECK(opt.height > 0 && opt.width > 0)
      << "TransformOptions without a size: build them with TransformOptionsFromConfig";
  ResizePil(decoded, opt.height, opt.width,
            opt.train ? Interpolation::kBicubic : Interpolation::kBilinear, out);
}

Augmentation DrawAugmentation(const TransformOptions& opt, Rng* rng) {
  Augmentation a;
  a.flip = rng->Uniform() < opt.flip_prob;
  a.top = static_cast<int>(rng->UniformInt(0, 2 * opt.padding));
  a.left = static_cast<int>(rng->UniformInt(0, 2 * opt.padding));
  if (rng->Uniform() > opt.erasing_prob) return a;  // timm: `if random.random() > p: return`
  const double area = static_cast<double>(opt.height) * opt.width;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = rng->Uniform(0.02, 1.0 / 3.0) * area;
    const double aspect = std::exp(rng->Uniform(std::log(0.3), std::log(1.0 / 0.3)));
    // Python's round() rounds half to even, as nearbyint does in the default rounding mode.
    const int h = static_cast<int>(std::nearbyint(std::sqrt(target_area * aspect)));
    const int w = static_cast<int>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w < opt.width && h < opt.height) {
      a.erase = true;
      a.erase_h = h;
      a.erase_w = w;
      a.erase_top = static_cast<int>(rng->UniformInt(0, opt.height - h));
      a.erase_left = static_cast<int>(rng->UniformInt(0, opt.width - w));
      break;
    }
  }
  return a;
}

void TransformToTensor(const Image& resized, const TransformOptions& opt, uint64_t seed,
                       int64_t epoch, int64_t key, float* out) {
  const int H = opt.height, W = opt.width;
  CHECK(resized.height == H && resized.width == W)
      << "TransformToTensor: image " << resized.height << "x" << resized.width << " vs " << H << "x"
      << W << " (resize first)";
  CHECK(opt.std[0] > 0 && opt.std[1] > 0 && opt.std[2] > 0)
      << "TransformOptions without pixel_std: build them with TransformOptionsFromConfig";
  const size_t plane = static_cast<size_t>(H) * W;
  // ToTensor then Normalize in float32, the same operations as torchvision: (u / 255 - m) / s.
  float lut[3][256];
  for (int c = 0; c < 3; ++c) {
    for (int u = 0; u < 256; ++u) {
      const float v = static_cast<float>(u) / 255.0f;
      lut[c][u] = (v - opt.mean[c]) / opt.std[c];
    }
  }
  if (!opt.train) {
    for (int y = 0; y < H; ++y) {
      const uint8_t* src = resized.row(y);
      for (int x = 0; x < W; ++x) {
        for (int c = 0; c < 3; ++c) out[c * plane + y * W + x] = lut[c][src[3 * x + c]];
      }
    }
    return;
  }
  Rng rng(seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(key), RngStream::kAugment);
  const Augmentation a = DrawAugmentation(opt, &rng);
  // Output (y, x) reads padded (y + top, x + left) = flipped (y + top - pad, x + left - pad);
  // row by row: padding spans filled, the rest read forwards or (flipped) backwards.
  const int shift = a.left - opt.padding;  // sx = x + shift
  const int x0 = std::max(0, -shift), x1 = std::min(W, W - shift);
  for (int y = 0; y < H; ++y) {
    const int sy = y + a.top - opt.padding;
    float* o0 = out + static_cast<size_t>(y) * W;
    float* o1 = o0 + plane;
    float* o2 = o1 + plane;
    const bool row_inside = sy >= 0 && sy < H;
    const int in0 = row_inside ? x0 : W, in1 = row_inside ? x1 : W;
    for (int x = 0; x < W; ++x) {
      if (x == in0) x = in1;  // skip the span read from the image
      if (x >= W) break;
      o0[x] = lut[0][0];
      o1[x] = lut[1][0];
      o2[x] = lut[2][0];
    }
    if (!row_inside) continue;
    const uint8_t* src = resized.row(sy);
    // Flipped: sx reads source column W - 1 - sx, walking backwards.
    const int step = a.flip ? -3 : 3;
    const uint8_t* p = src + 3 * (a.flip ? W - 1 - (x0 + shift) : x0 + shift);
    for (int x = x0; x < x1; ++x, p += step) {
      o0[x] = lut[0][p[0]];
      o1[x] = lut[1][p[1]];
      o2[x] = lut[2][p[2]];
    }
  }
  if (a.erase) FillErasing(a, W, plane, &rng, out);
}

}  // namespace reid::data
