// FusedAdam: Adam::step's arithmetic in one pass per parameter (fused_adam.h).
#include "trainer/fused_adam.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <memory>
#include <string>

namespace reid::trainer {
namespace internal {
namespace {

// The element loop, compiled once per target so that the AVX2 build vectorises it (sqrt and
// division included: -fno-math-errno semantics are not needed, the loop uses __builtin_sqrtf on
// non-negative values only, which GCC vectorises under the target attribute).
#define REID_ADAM_LOOP                                                                       \
  for (int64_t i = begin; i < end; ++i) {                                                    \
    const float g = wd != 0.0f ? grad[i] + wd * param[i] : grad[i];                          \
    const float m = exp_avg[i] * b1 + one_minus_b1 * g;                                      \
    const float v = exp_avg_sq[i] * b2 + one_minus_b2 * g * g;                               \
    exp_avg[i] = m;                                                                          \
    exp_avg_sq[i] = v;                                                                       \
    const float denom = __builtin_sqrtf(v) / sqrt_bc2 + eps;                                 \
    param[i] = param[i] + neg_step_size * (m / denom);                                       \
  }

struct Scalars {
  float wd, b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, neg_step_size;
};

__attribute__((target("avx2,fma"), optimize("no-math-errno"))) void LoopAvx2(
    float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t begin,
    int64_t end, Scalars s) {
  const auto [wd, b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, neg_step_size] = s;
  REID_ADAM_LOOP
}

__attribute__((optimize("no-math-errno"))) void LoopGeneric(float* param, const float* grad,
                                                             float* exp_avg, float* exp_avg_sq,
                                                             int64_t begin, int64_t end,
                                                             Scalars s) {
  const auto [wd, b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, neg_step_size] = s;
  REID_ADAM_LOOP
}

#undef REID_ADAM_LOOP

bool HasAvx2Fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

}  // namespace

void FusedAdamUpdate(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int64_t step) {
  // Adam::step's scalars, each rounded to float where ATen's float kernels round them.
  const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(step));
  const Scalars s{static_cast<float>(weight_decay),
                  static_cast<float>(beta1),
                  static_cast<float>(1 - beta1),
                  static_cast<float>(beta2),
                  static_cast<float>(1 - beta2),
                  static_cast<float>(std::sqrt(bias_correction2)),
                  static_cast<float>(eps),
                  static_cast<float>(-(lr / bias_correction1))};
  const bool avx2 = HasAvx2Fma();
  at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
    if (avx2) {
      LoopAvx2(param, grad, exp_avg, exp_avg_sq, begin, end, s);
    } else {
      LoopGeneric(param, grad, exp_avg, exp_avg_sq, begin, end, s);
    }
  });
}

}  // namespace internal

namespace {

// A gradient may be a non-contiguous view (the product that made it was transposed); the update
// reads a contiguous copy of it then.
bool Fusable(const torch::Tensor& p) {
  const torch::Tensor& g = p.grad();
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() &&
         g.device().is_cpu() && g.scalar_type() == torch::kFloat && !g.is_sparse() &&
         g.sizes() == p.sizes();
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  bool all = true;
  for (const auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (const auto& p : group.params()) {
      if (p.grad().defined()) all = all && !o.amsgrad() && Fusable(p);
    }
  }
  if (!all) return torch::optim::Adam::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    c10::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state()[c10::guts::to_string(p.unsafeGetTensorImpl())];  // Adam's key
      if (!slot) {  // Adam's lazy state, as Adam::step makes it
        auto fresh = std::make_unique<torch::optim::AdamParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        slot = std::move(fresh);
      }
      auto& st = static_cast<torch::optim::AdamParamState&>(*slot);
      st.step(st.step() + 1);
      torch::Tensor m = st.exp_avg(), v = st.exp_avg_sq();
      if (!m.is_contiguous() || !v.is_contiguous()) {  // e.g. a state read from elsewhere
        m = m.contiguous();
        v = v.contiguous();
        st.exp_avg(m);
        st.exp_avg_sq(v);
      }
      const auto [beta1, beta2] = o.betas();
      const torch::Tensor grad = p.grad().contiguous();
      internal::FusedAdamUpdate(p.data_ptr<float>(), grad.data_ptr<float>(),
                                m.data_ptr<float>(), v.data_ptr<float>(), p.numel(), o.lr(),
                                beta1, beta2, o.eps(), o.weight_decay(), st.step());
    }
  }
  return loss;
}

}  // namespace reid::trainer
