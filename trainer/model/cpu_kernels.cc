// The fused kernels' switch, QuickGELU and the softmax rows of the attention: plain loops that the
// compiler vectorises (cloned for AVX2, chosen at load time), parallelised with at::parallel_for,
// wrapped in autograd Functions. The arithmetic follows LibTorch's own kernels operation by
// operation (same order, no fused multiply-add: the file is built with -ffp-contract=off), so the
// results differ only in the exponential's last bits.
#include "trainer/model/cpu_kernels.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "trainer/model/cpu_kernels_internal.h"

namespace reid::model {
namespace {

#define REID_INLINE inline __attribute__((always_inline))

std::atomic<bool> g_fused{true};

constexpr float kQuickGeluAlpha = 1.702f;
constexpr int kLanes = 16;  // independent running maxima of a row

// a * b + c, rounded once where the build has FMA (kFma), twice otherwise.
template <bool kFma>
REID_INLINE float Fma(float a, float b, float c) {
  if constexpr (kFma) {
    return std::fma(a, b, c);
  } else {
    return a * b + c;
  }
}

// 2^e for -126 <= e <= 127, from its exponent bits.
REID_INLINE float Pow2(int32_t e) {
  const int32_t bits = (e + 127) << 23;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// exp(d) as ATen's vectorised exp computes it on x86 (SLEEF's expf_u10 algorithm, about 1 ulp):
// q = rint(d / ln2), s = d - q ln2 in two fused multiply-adds (ln2 split into a part exact in few
// bits and the rest), exp(s) by a degree-6 polynomial in Horner form, times 2^q in two halves
// (denormal results included). 0 below -104, +inf above 100, NaN stays NaN. Branch-free, so that
// loops over it vectorise. With FMA the results are ATen's bit for bit; without, within an ulp.
template <bool kFma>
REID_INLINE float ExpF(float d) {
  const bool nan = d != d;
  float dc = d < -110.0f ? -110.0f : d;  // keeps q's conversion defined; results selected below
  dc = dc > 110.0f ? 110.0f : dc;
  dc = nan ? 0.0f : dc;
  float qf = dc * 1.442695040888963407359924681001892137426645954152985934135449406931f;
  qf = (qf + 12582912.0f) - 12582912.0f;  // round to nearest even (|qf| < 2^22)
  const int32_t q = static_cast<int32_t>(qf);
  float s = Fma<kFma>(qf, -0.693145751953125f, dc);
  s = Fma<kFma>(qf, -1.428606765330187045e-06f, s);
  float u = 0.000198527617612853646278381f;
  u = Fma<kFma>(u, s, 0.00139304355252534151077271f);
  u = Fma<kFma>(u, s, 0.00833336077630519866943359f);
  u = Fma<kFma>(u, s, 0.0416664853692054748535156f);
  u = Fma<kFma>(u, s, 0.166666671633720397949219f);
  u = Fma<kFma>(u, s, 0.5f);
  u = 1.0f + Fma<kFma>(s * s, u, s);
  const int32_t q1 = q >> 1;
  u = u * Pow2(q1) * Pow2(q - q1);
  u = d < -104.0f ? 0.0f : u;
  u = d > 100.0f ? std::numeric_limits<float>::infinity() : u;
  return nan ? d : u;
}

// LibTorch's sigmoid: 1 / (1 + exp(0 - t)).
template <bool kFma>
REID_INLINE float Sigmoid(float t) {
  return 1.0f / (1.0f + ExpF<kFma>(0.0f - t));
}

// y = x * sigmoid(1.702 x): ATen's `1.702 * x` (the scalar rounded to float), sigmoid, mul.
template <bool kFma>
REID_INLINE void QuickGeluForwardLoop(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * Sigmoid<kFma>(x[i] * kQuickGeluAlpha);
}

// gx = g s + g x (1 - s) s 1.702, s = sigmoid(1.702 x), in autograd's order: the product's
// gradients g s and g x, sigmoid_backward's (a (1 - b)) b, the scalar product's, then their sum.
template <bool kFma>
REID_INLINE void QuickGeluBackwardLoop(const float* g, const float* x, float* gx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float s = Sigmoid<kFma>(x[i] * kQuickGeluAlpha);
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

// One row of softmax(s + mask) as ATen's softmax: the row's max, exp(z - max) stored, their sum,
// the row times the sum's reciprocal. mask may be null.
template <bool kFma>
REID_INLINE void SoftmaxRowLoop(const float* s, const float* mask, float* out, int64_t n) {
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
  for (i = 0; i < n; ++i) out[i] = ExpF<kFma>(out[i] - max);
  const float inv = 1.0f / SumLikeAten(out, n);
  for (i = 0; i < n; ++i) out[i] = out[i] * inv;
}

// sum(x * y) as ATen's vec::map2_reduce_all computes it: SumLikeAten's order, the first 8
// products rounded and the others accumulated with fused multiply-adds (the compiler contracts
// ATen's multiply-then-add where the build has FMA); short rows add rounded products in sequence.
template <bool kFma>
REID_INLINE float DotLikeAten(const float* x, const float* y, int64_t n) {
  if (n < 8) {
    float acc = n > 0 ? x[0] * y[0] : 0.0f;
    for (int64_t i = 1; i < n; ++i) acc += x[i] * y[i];
    return acc;
  }
  float lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = x[l] * y[l];
  int64_t d = 8;
  for (; d < n - n % 8; d += 8) {
    for (int l = 0; l < 8; ++l) lane[l] = Fma<kFma>(x[d + l], y[d + l], lane[l]);
  }
  for (int l = 0; l < n - d; ++l) lane[l] = Fma<kFma>(x[d + l], y[d + l], lane[l]);
  for (int l = 0; l < 4; ++l) lane[l] += lane[l + 4];
  return (lane[0] + lane[2]) + (lane[1] + lane[3]);
}

// One row of the backward: gs = (gp - sum(gp * p)) * p, ATen's softmax backward.
template <bool kFma>
REID_INLINE void SoftmaxBackwardRowLoop(const float* gp, const float* p, float* gs, int64_t n) {
  const float dot = DotLikeAten<kFma>(gp, p, n);
  for (int64_t i = 0; i < n; ++i) gs[i] = (gp[i] - dot) * p[i];
}

// Each kernel compiled twice, for AVX2 + FMA (vectorised 8 wide, SLEEF's fused multiply-adds) and
// for the baseline; the CPU picks (once) which runs.
#if defined(__x86_64__) && defined(__GNUC__)
#define REID_AVX2_FMA __attribute__((target("avx2,fma")))
#define REID_DISPATCH(avx2_call, base_call) \
  if (internal::CpuHasAvx2Fma()) {          \
    avx2_call;                              \
  } else {                                  \
    base_call;                              \
  }
#else
#define REID_AVX2_FMA
#define REID_DISPATCH(avx2_call, base_call) base_call
#endif

REID_AVX2_FMA void QuickGeluForwardAvx2(const float* x, float* y, int64_t n) {
  QuickGeluForwardLoop<true>(x, y, n);
}
REID_AVX2_FMA void QuickGeluBackwardAvx2(const float* g, const float* x, float* gx, int64_t n) {
  QuickGeluBackwardLoop<true>(g, x, gx, n);
}
REID_AVX2_FMA void SoftmaxRowAvx2(const float* s, const float* mask, float* out, int64_t n) {
  SoftmaxRowLoop<true>(s, mask, out, n);
}
REID_AVX2_FMA void SoftmaxBackwardRowAvx2(const float* gp, const float* p, float* gs, int64_t n) {
  SoftmaxBackwardRowLoop<true>(gp, p, gs, n);
}

void QuickGeluForwardRange(const float* x, float* y, int64_t n) {
  REID_DISPATCH(QuickGeluForwardAvx2(x, y, n), QuickGeluForwardLoop<false>(x, y, n));
}
void QuickGeluBackwardRange(const float* g, const float* x, float* gx, int64_t n) {
  REID_DISPATCH(QuickGeluBackwardAvx2(g, x, gx, n), QuickGeluBackwardLoop<false>(g, x, gx, n));
}

}  // namespace

bool CpuHasAvx2Fma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

namespace internal {

void SoftmaxRow(const float* s, const float* mask, float* out, int64_t n) {
  REID_DISPATCH(SoftmaxRowAvx2(s, mask, out, n), SoftmaxRowLoop<false>(s, mask, out, n));
}

void SoftmaxBackwardRow(const float* gp, const float* p, float* gs, int64_t n) {
  REID_DISPATCH(SoftmaxBackwardRowAvx2(gp, p, gs, n), SoftmaxBackwardRowLoop<false>(gp, p, gs, n));
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
  RECORD_FUNCTION("reid::QuickGelu", std::vector<c10::IValue>());  // a row in profiles
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
