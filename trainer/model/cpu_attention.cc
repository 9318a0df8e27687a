// The fused CPU attention: per (batch, head) one task runs both products (cpu_gemm.h), the softmax
// rows and the heads' scatter, reading q, k, v in place from the input projection's output.
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/version.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "trainer/model/cpu_gemm.h"
#include "trainer/model/cpu_kernels.h"
#include "trainer/model/cpu_kernels_internal.h"

namespace reid::model {
namespace {

using internal::ConstantMask;
using internal::SoftmaxBackwardRow;
using internal::SoftmaxRow;
using internal::TakesFusedPath;

// The longest sum (over tokens, or over a head's width) the fused products take. OpenBLAS splits
// longer sums into blocks (320 on this project's Zen 4 machine) and adds the partial sums, which
// SmallGemm's single running sum does not reproduce: up to 1.1e-6 relative at 751 tokens
// (measured), beyond the 1e-6 the fused kernels keep to. Up to here the products are OpenBLAS's
// bit for bit there (the ViT's 129 tokens, CLIP's 77); longer sequences (the cross-modal
// attention over a class bank) take the unfused ops.
constexpr int64_t kMaxFusedSum = 256;

int64_t RoundUp16(int64_t n) { return (n + 15) / 16 * 16; }

// The geometry of one attention call: qkv (B, L, 3W), heads of width hd; row lengths padded to
// 16 for SmallGemm (lp, hdp).
struct AttentionShape {
  int64_t b, l, w, heads, hd, lp, hdp;
  AttentionShape(const torch::Tensor& qkv, int64_t h)
      : b(qkv.size(0)),
        l(qkv.size(1)),
        w(qkv.size(2) / 3),
        heads(h),
        hd(w / h),
        lp(RoundUp16(l)),
        hdp(RoundUp16(w / h)) {}
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
    SoftmaxRow(s + i * g.lp, mask ? mask + i * l : nullptr, p + i * l, l);
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
    SoftmaxBackwardRow(gp + i * g.lp, p + i * l, gs + i * g.lp, l);
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
  RECORD_FUNCTION("reid::Attention", std::vector<c10::IValue>());  // a row in profiles
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
    torch::Tensor out = AttentionForward(qkv, AttentionShape(qkv, heads), mask.mask,
                                         static_cast<float>(scale), &probs);
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
  if (!TakesFusedPath(qkv) || (mask.defined() && (!TakesFusedPath(mask) || mask.requires_grad())) ||
      qkv.size(1) > kMaxFusedSum || qkv.size(2) / 3 / heads > kMaxFusedSum) {
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
