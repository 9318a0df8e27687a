#include "trainer/fused_adam.h"

#include <ATen/Parallel.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <cmath>
#include <memory>
#include <string>

#include "trainer/model/cpu_kernels.h"

namespace reid::trainer {
namespace {

bool Fusable(const torch::Tensor& p) {
  const torch::Tensor& g = p.grad();
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat32 && p.is_contiguous() &&
         !g.is_sparse() && g.device().is_cpu() && g.scalar_type() == torch::kFloat32 &&
         g.is_contiguous() && g.sizes() == p.sizes();
}

// One parameter's update, as Adam::step's operators compute it element by element:
//   g = grad.add(p, wd)                    (add: a fused multiply-add, as ATen's vector kernel)
//   m.mul_(b1).add_(g, 1 - b1)             (mul, then a fused multiply-add)
//   v.mul_(b2).addcmul_(g, g, 1 - b2)      (mul, then v + ((1 - b2) g) g)
//   d = (v.sqrt() / sqrt(bc2)).add_(eps)
//   p.addcdiv_(m, d, -lr / bc1)            (p + ((-step) m) / d)
// This file is built without floating-point contraction (CMakeLists.txt): no other product fuses.
struct Coefficients {
  bool decay;
  float wd, b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, neg_step;
};

template <bool kFma>
inline void UpdateOne(const Coefficients& c, float* p, const float* grad, float* m, float* v,
                      int64_t i) {
  float g = grad[i];
  if (c.decay) g = kFma ? std::fma(p[i], c.wd, g) : p[i] * c.wd + g;
  const float scaled = m[i] * c.b1;
  const float mi = kFma ? std::fma(g, c.one_minus_b1, scaled) : g * c.one_minus_b1 + scaled;
  const float vi = v[i] * c.b2 + (c.one_minus_b2 * g) * g;
  const float d = std::sqrt(vi) / c.sqrt_bc2 + c.eps;
  m[i] = mi;
  v[i] = vi;
  p[i] = p[i] + (c.neg_step * mi) / d;
}

void UpdateLoop(const Coefficients& c, float* p, const float* grad, float* m, float* v, int64_t lo,
                int64_t hi) {
  for (int64_t i = lo; i < hi; ++i) UpdateOne<false>(c, p, grad, m, v, i);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void UpdateAvx2(const Coefficients& c, float* p,
                                                    const float* grad, float* m, float* v,
                                                    int64_t lo, int64_t hi) {
  const __m256 wd = _mm256_set1_ps(c.wd), b1 = _mm256_set1_ps(c.b1);
  const __m256 one_minus_b1 = _mm256_set1_ps(c.one_minus_b1), b2 = _mm256_set1_ps(c.b2);
  const __m256 one_minus_b2 = _mm256_set1_ps(c.one_minus_b2);
  const __m256 sqrt_bc2 = _mm256_set1_ps(c.sqrt_bc2), eps = _mm256_set1_ps(c.eps);
  const __m256 neg_step = _mm256_set1_ps(c.neg_step);
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8) {
    const __m256 pi = _mm256_loadu_ps(p + i);
    __m256 g = _mm256_loadu_ps(grad + i);
    if (c.decay) g = _mm256_fmadd_ps(pi, wd, g);
    const __m256 mi = _mm256_fmadd_ps(g, one_minus_b1, _mm256_mul_ps(_mm256_loadu_ps(m + i), b1));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2),
                                    _mm256_mul_ps(_mm256_mul_ps(one_minus_b2, g), g));
    const __m256 d = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), sqrt_bc2), eps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_div_ps(_mm256_mul_ps(neg_step, mi), d)));
  }
  for (; i < hi; ++i) UpdateOne<true>(c, p, grad, m, v, i);
}
#endif

void Update(const Coefficients& c, float* p, const float* grad, float* m, float* v, int64_t n) {
  const bool avx2 = model::CpuHasAvx2Fma();  // false off x86-64
  at::parallel_for(0, n, 1 << 14, [&](int64_t lo, int64_t hi) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx2) {
      UpdateAvx2(c, p, grad, m, v, lo, hi);
      return;
    }
#endif
    (void)avx2;
    UpdateLoop(c, p, grad, m, v, lo, hi);
  });
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (const auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    if (options.amsgrad()) return Adam::step(std::move(closure));
    for (const auto& p : group.params()) {
      if (p.grad().defined() && !Fusable(p)) return Adam::step(std::move(closure));
    }
  }
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& options = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {  // as Adam::step initialises it
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& state = static_cast<torch::optim::AdamParamState&>(*it->second);
      torch::Tensor& exp_avg = state.exp_avg();
      torch::Tensor& exp_avg_sq = state.exp_avg_sq();
      // Made above, or restored by optimizer_state.cc, which checks shape and type against p.
      for (const torch::Tensor* t : {&exp_avg, &exp_avg_sq}) {
        CHECK(t->is_contiguous() && t->sizes() == p.sizes() &&
              t->scalar_type() == torch::kFloat32 && t->device().is_cpu())
            << "Adam state of a parameter " << p.sizes() << ": " << t->sizes() << " "
            << t->scalar_type();
      }
      state.step(state.step() + 1);
      const double beta1 = std::get<0>(options.betas()), beta2 = std::get<1>(options.betas());
      const double bias_correction1 = 1 - std::pow(beta1, state.step());
      const double bias_correction2 = 1 - std::pow(beta2, state.step());
      const double step_size = options.lr() / bias_correction1;
      const Coefficients c{options.weight_decay() != 0,
                           static_cast<float>(options.weight_decay()),
                           static_cast<float>(beta1),
                           static_cast<float>(1 - beta1),
                           static_cast<float>(beta2),
                           static_cast<float>(1 - beta2),
                           static_cast<float>(std::sqrt(bias_correction2)),
                           static_cast<float>(options.eps()),
                           static_cast<float>(-step_size)};
      Update(c, p.data_ptr<float>(), p.grad().data_ptr<float>(), exp_avg.data_ptr<float>(),
             exp_avg_sq.data_ptr<float>(), p.numel());
    }
  }
  return loss;
}

}  // namespace reid::trainer
