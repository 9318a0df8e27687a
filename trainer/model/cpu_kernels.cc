// The fused kernels' switch, QuickGELU and the softmax rows of the attention: plain loops that the
// compiler vectorises (cloned for AVX2, chosen at load time), parallelised with at::parallel_for,
// wrapped in autograd Functions. The arithmetic follows LibTorch's own kernels operation by
// operation (same order, no fused multiply-add: the file is built with -ffp-contract=off), so the
// results differ only in the exponential's last bits.
#include "trainer/model/cpu_kernels.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "trainer/model/cpu_kernels_internal.h"

namespace reid::model {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define REID_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REID_VECTOR_CLONES
#endif

std::atomic<bool> g_fused{false};  // off: train_step_parity exceeded its bound with them on

constexpr float kQuickGeluAlpha = 1.702f;
constexpr int kLanes = 16;  // independent running maxima of a row

// exp(x) in float, branch-free so that loops over it vectorise: x = n ln2 + r with |r| <= ln2/2
// (ln2 split in two for an exact n ln2), exp(r) by Cephes' degree-6 polynomial (about 1 ulp), times
// 2^n built from its exponent bits in two halves (n reaches 128 at the top of the range). Below
// ln(FLT_MIN) the result is 0 (no denormals; -inf gives 0), above ln(FLT_MAX) +inf, NaN stays NaN.
inline float ExpF(float x) {
  constexpr float kLo = -87.33654475f, kHi = 88.72283905f;
  const bool nan = x != x;
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  xc = nan ? 0.0f : xc;
  float n = xc * 1.44269504088896341f;
  n = (n + 12582912.0f) - 12582912.0f;  // round to nearest (|n| < 2^22)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * (r * r) + r + 1.0f;
  const int32_t e = static_cast<int32_t>(n);
  const int32_t e1 = e >> 1, e2 = e - e1;
  const int32_t b1 = (e1 + 127) << 23, b2 = (e2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  y = y * s1 * s2;
  y = x < kLo ? 0.0f : y;
  y = x > kHi ? std::numeric_limits<float>::infinity() : y;
  return nan ? x : y;
}

// LibTorch's sigmoid: 1 / (1 + exp(-t)).
inline float Sigmoid(float t) { return 1.0f / (1.0f + ExpF(-t)); }

// y = x * sigmoid(1.702 x): ATen's `1.702 * x` (the scalar rounded to float), sigmoid, mul.
REID_VECTOR_CLONES void QuickGeluForwardRange(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * Sigmoid(x[i] * kQuickGeluAlpha);
}

// gx = g s + g x (1 - s) s 1.702, s = sigmoid(1.702 x), in autograd's order: the product's
// gradients g s and g x, sigmoid_backward's (a (1 - b)) b, the scalar product's, then their sum.
REID_VECTOR_CLONES void QuickGeluBackwardRange(const float* g, const float* x, float* gx,
                                               int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = Sigmoid(x[i] * kQuickGeluAlpha);
    const float through_sigmoid = g[i] * x[i] * (1.0f - s) * s * kQuickGeluAlpha;
    gx[i] = g[i] * s + through_sigmoid;
  }
}

// Sum of n floats in the order of ATen's vec::reduce_all with 8-float vectors (its AVX2 and
// default kernels): 8 running lane sums from the first 8 values, the tail added to the first
// lanes, then the lanes folded pairwise as its AVX2 horizontal reduction does (4 apart, 2 apart,
// 1 apart). Rows shorter than 8 are summed in sequence, as reduce_all's short path. Same order,
// same rounding: the fused softmax's sums equal LibTorch's there.
inline float SumLikeAten(const float* x, int64_t n) {
  if (n < 8) {
    float acc = n > 0 ? x[0] : 0.0f;
    for (int64_t i = 1; i < n; ++i) acc += x[i];
    return acc;
  }
  float lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = x[l];
  int64_t d = 8;
  for (; d < n - n % 8; d += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += x[d + l];
  }
  for (int l = 0; l < n - d; ++l) lane[l] += x[d + l];
  for (int l = 0; l < 4; ++l) lane[l] += lane[l + 4];
  return (lane[0] + lane[2]) + (lane[1] + lane[3]);
}

}  // namespace

namespace internal {

// One row of softmax(s + mask) as ATen's softmax: the row's max, exp(z - max) stored, their sum,
// the row times the sum's reciprocal. mask may be null.
REID_VECTOR_CLONES void SoftmaxRow(const float* s, const float* mask, float* out, int64_t n) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float lane[kLanes];
  for (float& m : lane) m = -kInf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float z = mask ? s[i + l] + mask[i + l] : s[i + l];
      out[i + l] = z;
      lane[l] = lane[l] < z ? z : lane[l];
    }
  }
  float max = -kInf;
  for (; i < n; ++i) {
    out[i] = mask ? s[i] + mask[i] : s[i];
    max = max < out[i] ? out[i] : max;
  }
  for (const float m : lane) max = max < m ? m : max;
  for (i = 0; i < n; ++i) out[i] = ExpF(out[i] - max);
  const float inv = 1.0f / SumLikeAten(out, n);
  for (i = 0; i < n; ++i) out[i] = out[i] * inv;
}

// One row of the backward: gs = (gp - sum(gp * p)) * p, ATen's softmax backward (its products
// summed in reduce_all's order).
REID_VECTOR_CLONES void SoftmaxBackwardRow(const float* gp, const float* p, float* gs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gs[i] = gp[i] * p[i];
  const float dot = SumLikeAten(gs, n);
  for (int64_t i = 0; i < n; ++i) gs[i] = (gp[i] - dot) * p[i];
}

bool TakesFusedPath(const torch::Tensor& x) {
  return g_fused.load(std::memory_order_relaxed) && x.defined() && x.device().is_cpu() &&
         x.scalar_type() == torch::kFloat && x.layout() == torch::kStrided;
}

}  // namespace internal

namespace {

using internal::kGrain;
using internal::TakesFusedPath;

torch::Tensor QuickGeluForward(const torch::Tensor& input) {
  const torch::Tensor x = input.contiguous();
  torch::Tensor y = torch::empty_like(x, at::MemoryFormat::Contiguous);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    QuickGeluForwardRange(xp + begin, yp + begin, end - begin);
  });
  return y;
}

class QuickGeluFunction : public torch::autograd::Function<QuickGeluFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return QuickGeluForward(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0].contiguous();
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor gx = torch::empty_like(x, at::MemoryFormat::Contiguous);
    const float *gp = g.data_ptr<float>(), *xp = x.data_ptr<float>();
    float* gxp = gx.data_ptr<float>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      QuickGeluBackwardRange(gp + begin, xp + begin, gxp + begin, end - begin);
    });
    return {gx};
  }
};

}  // namespace

void SetFusedCpuKernels(bool on) { g_fused.store(on, std::memory_order_relaxed); }

torch::Tensor QuickGeluUnfused(const torch::Tensor& x) { return x * torch::sigmoid(1.702 * x); }

torch::Tensor QuickGelu(const torch::Tensor& x) {
  if (!TakesFusedPath(x)) return QuickGeluUnfused(x);
  if (!(torch::GradMode::is_enabled() && x.requires_grad())) return QuickGeluForward(x);
  return QuickGeluFunction::apply(x);
}

}  // namespace reid::model
