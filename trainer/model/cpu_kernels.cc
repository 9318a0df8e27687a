// Fused CPU float32 kernels: plain loops that the compiler vectorises (cloned for AVX2, chosen at
// load time), parallelised with at::parallel_for, wrapped in autograd Functions. The arithmetic
// follows LibTorch's own kernels operation by operation (same order, no fused multiply-add: the
// file is built with -ffp-contract=off) so that the results differ only by the exponential's last
// bits and by the order of the row sums.
#include "trainer/model/cpu_kernels.h"

#include <ATen/Parallel.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "trainer/model/cpu_gemm.h"

namespace reid::model {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define REID_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REID_VECTOR_CLONES
#endif

std::atomic<bool> g_fused{true};

constexpr float kQuickGeluAlpha = 1.702f;
constexpr int64_t kGrain = 32768;  // elements per task, as ATen's elementwise kernels
constexpr int kLanes = 16;         // independent running maxima of a row

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

// One row of softmax(s * scale + mask) as ATen's softmax: the row's max, exp(z - max) stored, their
// sum, the row times the sum's reciprocal. mask may be null.
REID_VECTOR_CLONES void SoftmaxRow(const float* s, const float* mask, float scale, float* out,
                                   int64_t n) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  float lane[kLanes];
  for (float& m : lane) m = -kInf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float z = mask ? s[i + l] * scale + mask[i + l] : s[i + l] * scale;
      out[i + l] = z;
      lane[l] = lane[l] < z ? z : lane[l];
    }
  }
  float max = -kInf;
  for (; i < n; ++i) {
    out[i] = mask ? s[i] * scale + mask[i] : s[i] * scale;
    max = max < out[i] ? out[i] : max;
  }
  for (const float m : lane) max = max < m ? m : max;
  for (i = 0; i < n; ++i) out[i] = ExpF(out[i] - max);
  const float inv = 1.0f / SumLikeAten(out, n);
  for (i = 0; i < n; ++i) out[i] = out[i] * inv;
}

// One row of the backward: gs = ((gp - sum(gp * p)) * p) * scale, ATen's softmax backward (its
// products summed in reduce_all's order) then the scale's product.
REID_VECTOR_CLONES void SoftmaxBackwardRow(const float* gp, const float* p, float scale,
                                           float* gs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gs[i] = gp[i] * p[i];
  const float dot = SumLikeAten(gs, n);
  for (int64_t i = 0; i < n; ++i) gs[i] = (gp[i] - dot) * p[i] * scale;
}

bool TakesFusedPath(const torch::Tensor& x) {
  return g_fused.load(std::memory_order_relaxed) && x.defined() && x.device().is_cpu() &&
         x.scalar_type() == torch::kFloat && x.layout() == torch::kStrided;
}

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

// Rows per task: about kGrain elements.
int64_t RowGrain(int64_t row) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(1, row)); }

torch::Tensor SoftmaxForward(const torch::Tensor& scores, float scale, const torch::Tensor& mask) {
  const torch::Tensor s = scores.contiguous();
  const int64_t lq = s.size(-2), lk = s.size(-1), rows = s.numel() / lk;
  torch::Tensor out = torch::empty_like(s, at::MemoryFormat::Contiguous);
  const float* sp = s.data_ptr<float>();
  const float* mp = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  at::parallel_for(0, rows, RowGrain(lk), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      SoftmaxRow(sp + r * lk, mp ? mp + (r % lq) * lk : nullptr, scale, op + r * lk, lk);
    }
  });
  return out;
}

// The mask travels outside autograd's inputs (it has no gradient and may be undefined).
struct ConstantMask {
  torch::Tensor mask;
};

class SoftmaxFunction : public torch::autograd::Function<SoftmaxFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& scores,
                               double scale, const ConstantMask& mask) {
    torch::Tensor p = SoftmaxForward(scores, static_cast<float>(scale), mask.mask);
    ctx->save_for_backward({p});
    ctx->saved_data["scale"] = scale;
    return p;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor p = ctx->get_saved_variables()[0];
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const torch::Tensor g = grads[0].contiguous();
    const int64_t lk = p.size(-1), rows = p.numel() / lk;
    torch::Tensor gs = torch::empty_like(p, at::MemoryFormat::Contiguous);
    const float *gp = g.data_ptr<float>(), *pp = p.data_ptr<float>();
    float* gsp = gs.data_ptr<float>();
    at::parallel_for(0, rows, RowGrain(lk), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        SoftmaxBackwardRow(gp + r * lk, pp + r * lk, scale, gsp + r * lk, lk);
      }
    });
    return {gs, torch::Tensor(), torch::Tensor()};
  }
};

int64_t RoundUp16(int64_t n) { return (n + 15) / 16 * 16; }

// The geometry of one attention call: qkv (B, L, 3W), heads of width hd; row lengths padded to
// 16 for SmallGemm (lp, hdp).
struct AttentionShape {
  int64_t b, l, w, heads, hd, lp, hdp;
  AttentionShape(const torch::Tensor& qkv, int64_t h)
      : b(qkv.size(0)), l(qkv.size(1)), w(qkv.size(2) / 3), heads(h), hd(w / h),
        lp(RoundUp16(l)), hdp(RoundUp16(w / h)) {}
};

// rows x cols floats, `ld` apart, into buf (rows x ldp, ldp >= cols; zero padded), or in place
// when the rows need no padding. Returns the rows' start; *ld_out their stride.
const float* RowsPadded(const float* src, int64_t ld, int64_t rows, int64_t cols, int64_t ldp,
                        float* buf, int64_t* ld_out) {
  if (cols == ldp) {
    *ld_out = ld;
    return src;
  }
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(buf + i * ldp, src + i * ld, cols * sizeof(float));
    std::memset(buf + i * ldp + cols, 0, (ldp - cols) * sizeof(float));
  }
  *ld_out = ldp;
  return buf;
}

// The transpose of rows x cols floats (`ld` apart) into buf: cols x ldp, zero padded to ldp.
void TransposePadded(const float* src, int64_t ld, int64_t rows, int64_t cols, int64_t ldp,
                     float* buf) {
  std::memset(buf, 0, cols * ldp * sizeof(float));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t d = 0; d < cols; ++d) buf[d * ldp + i] = src[i * ld + d];
  }
}

// C (rows x cols) from a padded product into dst rows `ld` apart (no copy when C is dst).
void StoreRows(const float* c, int64_t ldc, int64_t rows, int64_t cols, float* dst, int64_t ld) {
  if (c == dst) return;
  for (int64_t i = 0; i < rows; ++i) std::memcpy(dst + i * ld, c + i * ldc, cols * sizeof(float));
}

// q * scale (LibTorch's rounding of the scaled q) into buf: rows x cols, ldp apart, zero padded.
void ScaledRows(const float* q, int64_t ld, int64_t rows, int64_t cols, float scale, int64_t ldp,
                float* buf) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t d = 0; d < cols; ++d) buf[i * ldp + d] = q[i * ld + d] * scale;
    for (int64_t d = cols; d < ldp; ++d) buf[i * ldp + d] = 0.0f;
  }
}

// Forward of one (batch, head), the unfused ops' arithmetic: S = (q scale) k^T, P = softmax(S +
// mask) into p (L x L), O = P v into out's head columns.
void AttentionForwardHead(const AttentionShape& g, const float* qkv, const float* mask, float scale,
                          float* p, float* out, std::vector<float>& scratch) {
  const int64_t l = g.l, hd = g.hd, ld = 3 * g.w;
  scratch.resize(g.hd * g.lp + g.l * g.lp + 3 * g.l * g.hdp);
  float* kt = scratch.data();   // (hd, Lp)
  float* s = kt + g.hd * g.lp;  // (L, Lp)
  float* qs = s + g.l * g.lp;   // (L, hdp)
  float* vbuf = qs + g.l * g.hdp;
  float* obuf = vbuf + g.l * g.hdp;
  const float *q = qkv, *k = qkv + g.w, *v = qkv + 2 * g.w;
  ScaledRows(q, ld, l, hd, scale, g.hdp, qs);
  TransposePadded(k, ld, l, hd, g.lp, kt);
  SmallGemm({qs, g.hdp, 1}, l, hd, kt, g.lp, g.lp, s, g.lp);
  for (int64_t i = 0; i < l; ++i) {
    SoftmaxRow(s + i * g.lp, mask ? mask + i * l : nullptr, 1.0f, p + i * l, l);
  }
  int64_t ldv = 0;
  const float* vr = RowsPadded(v, ld, l, hd, g.hdp, vbuf, &ldv);
  float* o = hd == g.hdp ? out : obuf;
  SmallGemm({p, l, 1}, l, l, vr, ldv, g.hdp, o, hd == g.hdp ? g.w : g.hdp);
  StoreRows(o, g.hdp, l, hd, out, g.w);
}

// Backward of one (batch, head), again the unfused ops' arithmetic: from gO (the head's columns
// of the output's gradient) gP = gO v^T, gS = softmax's backward, gV = P^T gO, gQ = (gS k) scale,
// gK = gS^T (q scale), written into gqkv's head columns.
void AttentionBackwardHead(const AttentionShape& g, const float* qkv, const float* p,
                           const float* gout, float scale, float* gqkv,
                           std::vector<float>& scratch) {
  const int64_t l = g.l, hd = g.hd, ld = 3 * g.w;
  scratch.resize(g.hd * g.lp + 2 * g.l * g.lp + 4 * g.l * g.hdp);
  float* vt = scratch.data();    // (hd, Lp)
  float* gp = vt + g.hd * g.lp;  // (L, Lp)
  float* gs = gp + g.l * g.lp;   // (L, Lp)
  float* rows[4];                // padded rows of gO, k, q scale and a product's output
  for (int i = 0; i < 4; ++i) rows[i] = gs + g.l * g.lp + i * g.l * g.hdp;
  const float *q = qkv, *k = qkv + g.w, *v = qkv + 2 * g.w;
  TransposePadded(v, ld, l, hd, g.lp, vt);
  SmallGemm({gout, g.w, 1}, l, hd, vt, g.lp, g.lp, gp, g.lp);  // gP = gO v^T
  for (int64_t i = 0; i < l; ++i) {
    SoftmaxBackwardRow(gp + i * g.lp, p + i * l, 1.0f, gs + i * g.lp, l);
  }
  const bool direct = hd == g.hdp;
  auto product = [&](const StridedMatrix& a, const float* b, int64_t ldb, float* dst) {
    float* c = direct ? dst : rows[3];
    SmallGemm(a, l, l, b, ldb, g.hdp, c, direct ? ld : g.hdp);
    StoreRows(c, g.hdp, l, hd, dst, ld);
  };
  int64_t ldo = 0, ldk = 0;
  const float* go = RowsPadded(gout, g.w, l, hd, g.hdp, rows[0], &ldo);
  const float* kr = RowsPadded(k, ld, l, hd, g.hdp, rows[1], &ldk);
  ScaledRows(q, ld, l, hd, scale, g.hdp, rows[2]);
  product({p, 1, l}, go, ldo, gqkv + 2 * g.w);         // gV = P^T gO
  product({gs, g.lp, 1}, kr, ldk, gqkv);               // gQ = gS k, scaled below
  product({gs, 1, g.lp}, rows[2], g.hdp, gqkv + g.w);  // gK = gS^T (q scale)
  for (int64_t i = 0; i < l; ++i) {
    for (int64_t d = 0; d < hd; ++d) gqkv[i * ld + d] = gqkv[i * ld + d] * scale;
  }
}

torch::Tensor AttentionForward(const torch::Tensor& qkv, const AttentionShape& g,
                               const torch::Tensor& mask, float scale, torch::Tensor* probs) {
  torch::Tensor out = torch::empty({g.b, g.l, g.w}, qkv.options());
  *probs = torch::empty({g.b, g.heads, g.l, g.l}, qkv.options());
  const float* x = qkv.data_ptr<float>();
  const float* m = mask.defined() ? mask.data_ptr<float>() : nullptr;
  float *o = out.data_ptr<float>(), *p = probs->data_ptr<float>();
  at::parallel_for(0, g.b * g.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bi = t / g.heads, h = t % g.heads;
      AttentionForwardHead(g, x + bi * g.l * 3 * g.w + h * g.hd, m, scale, p + t * g.l * g.l,
                           o + bi * g.l * g.w + h * g.hd, scratch);
    }
  });
  return out;
}

class AttentionFunction : public torch::autograd::Function<AttentionFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv,
                               int64_t heads, double scale, const ConstantMask& mask) {
    torch::Tensor probs;
    torch::Tensor out =
        AttentionForward(qkv, AttentionShape(qkv, heads), mask.mask, static_cast<float>(scale), &probs);
    ctx->save_for_backward({qkv, probs});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["scale"] = scale;
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& qkv = saved[0];
    const torch::Tensor& probs = saved[1];
    const AttentionShape g(qkv, ctx->saved_data["heads"].toInt());
    const float scale = static_cast<float>(ctx->saved_data["scale"].toDouble());
    const torch::Tensor gout = grads[0].contiguous();
    torch::Tensor gqkv = torch::empty_like(qkv);
    const float *x = qkv.data_ptr<float>(), *p = probs.data_ptr<float>();
    const float* go = gout.data_ptr<float>();
    float* gx = gqkv.data_ptr<float>();
    at::parallel_for(0, g.b * g.heads, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t bi = t / g.heads, h = t % g.heads;
        AttentionBackwardHead(g, x + bi * g.l * 3 * g.w + h * g.hd, p + t * g.l * g.l,
                              go + bi * g.l * g.w + h * g.hd, scale,
                              gx + bi * g.l * 3 * g.w + h * g.hd, scratch);
      }
    });
    return {gqkv, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void SetFusedCpuKernels(bool on) { g_fused.store(on, std::memory_order_relaxed); }
bool FusedCpuKernels() { return g_fused.load(std::memory_order_relaxed); }

torch::Tensor QuickGeluUnfused(const torch::Tensor& x) { return x * torch::sigmoid(1.702 * x); }

torch::Tensor QuickGelu(const torch::Tensor& x) {
  if (!TakesFusedPath(x)) return QuickGeluUnfused(x);
  if (!(torch::GradMode::is_enabled() && x.requires_grad())) return QuickGeluForward(x);
  return QuickGeluFunction::apply(x);
}

torch::Tensor ScaledMaskedSoftmaxUnfused(const torch::Tensor& scores, double scale,
                                         const torch::Tensor& mask) {
  auto z = scores * scale;
  if (mask.defined()) z = z + mask.to(z.scalar_type());
  return torch::softmax(z, -1);
}

torch::Tensor ScaledMaskedSoftmax(const torch::Tensor& scores, double scale,
                                  const torch::Tensor& mask) {
  CHECK_GE(scores.dim(), 2) << "softmax scores must be (..., Lq, Lk)";
  if (!TakesFusedPath(scores) || (mask.defined() && !TakesFusedPath(mask)) ||
      (mask.defined() && mask.requires_grad())) {
    return ScaledMaskedSoftmaxUnfused(scores, scale, mask);
  }
  const torch::Tensor m = mask.defined() ? mask.contiguous() : mask;
  if (m.defined()) {
    CHECK(m.dim() == 2 && m.size(0) == scores.size(-2) && m.size(1) == scores.size(-1))
        << "attention mask " << m.sizes() << " vs scores " << scores.sizes();
  }
  if (!(torch::GradMode::is_enabled() && scores.requires_grad())) {
    return SoftmaxForward(scores, static_cast<float>(scale), m);
  }
  return SoftmaxFunction::apply(scores, scale, ConstantMask{m});
}

}  // namespace reid::model

namespace reid::model {

torch::Tensor AttentionUnfused(const torch::Tensor& qkv, int64_t heads, const torch::Tensor& mask) {
  const int64_t b = qkv.size(0), l = qkv.size(1), w = qkv.size(2) / 3, hd = w / heads;
  // (B, L, 3W) -> 3 x (B, heads, L, hd)
  auto parts = qkv.view({b, l, 3, heads, hd}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = parts[0], k = parts[1], v = parts[2], out;
#if TORCH_VERSION_MAJOR >= 2
  out = at::scaled_dot_product_attention(
      q, k, v, mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt);
#else
  q = q * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto scores = torch::matmul(q, k.transpose(-2, -1));  // (B, heads, L, L)
  if (mask.defined()) scores = scores + mask.to(scores.scalar_type());
  out = torch::matmul(torch::softmax(scores, -1), v);  // (B, heads, L, hd)
#endif
  return out.transpose(1, 2).reshape({b, l, w});
}

torch::Tensor Attention(const torch::Tensor& qkv, int64_t heads, const torch::Tensor& mask) {
  CHECK(qkv.dim() == 3 && qkv.size(2) % (3 * heads) == 0)
      << "attention input " << qkv.sizes() << " is not (B, L, 3W) with W divisible by " << heads;
  if (!TakesFusedPath(qkv) || (mask.defined() && (!TakesFusedPath(mask) || mask.requires_grad()))) {
    return AttentionUnfused(qkv, heads, mask);
  }
  const int64_t l = qkv.size(1);
  const torch::Tensor m = mask.defined() ? mask.contiguous() : mask;
  CHECK(!m.defined() || (m.dim() == 2 && m.size(0) == l && m.size(1) == l))
      << "attention mask " << m.sizes() << " for " << l << " tokens";
  const torch::Tensor x = qkv.contiguous();
  const double scale = 1.0 / std::sqrt(static_cast<double>(qkv.size(2) / 3 / heads));
  if (!(torch::GradMode::is_enabled() && qkv.requires_grad())) {
    torch::Tensor probs;
    return AttentionForward(x, AttentionShape(x, heads), m, static_cast<float>(scale), &probs);
  }
  return AttentionFunction::apply(x, heads, scale, ConstantMask{m});
}

}  // namespace reid::model
