// FusedAdam against LibTorch's Adam: the same parameters and state after several steps (to float
// rounding), the same state layout, and Adam's own path for what it does not fuse.
#include "trainer/fused_adam.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace reid::trainer {
namespace {

// Two groups (one with weight decay), params of odd sizes, several steps with fresh gradients.
template <typename Opt>
std::vector<torch::Tensor> RunSteps(torch::Dtype dtype, std::vector<torch::Tensor>* state_out) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> a = {torch::randn({37, 5}, dtype), torch::randn({70001}, dtype)};
  std::vector<torch::Tensor> b = {torch::randn({3, 3, 7}, dtype)};
  for (auto* group : {&a, &b}) {
    for (auto& p : *group) p.requires_grad_(true);
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(a, std::make_unique<torch::optim::AdamOptions>(
                             torch::optim::AdamOptions(3e-3).weight_decay(5e-4)));
  groups.emplace_back(b, std::make_unique<torch::optim::AdamOptions>(
                             torch::optim::AdamOptions(1e-2).betas({0.8, 0.95}).eps(1e-6)));
  Opt opt(groups, torch::optim::AdamOptions(3e-3));
  for (int step = 0; step < 5; ++step) {
    for (auto* group : {&a, &b}) {
      for (auto& p : *group) p.mutable_grad() = torch::randn_like(p) * (step + 1);
    }
    opt.step();
  }
  std::vector<torch::Tensor> params = a;
  params.insert(params.end(), b.begin(), b.end());
  for (const auto& p : params) {
    const auto it = opt.state().find(c10::guts::to_string(p.unsafeGetTensorImpl()));
    EXPECT_NE(it, opt.state().end());
    if (it == opt.state().end()) continue;
    const auto& st = static_cast<const torch::optim::AdamParamState&>(*it->second);
    EXPECT_EQ(st.step(), 5);
    state_out->push_back(st.exp_avg());
    state_out->push_back(st.exp_avg_sq());
  }
  return params;
}

double MaxRelDiff(const torch::Tensor& x, const torch::Tensor& ref) {
  return ((x - ref).abs().max() / ref.abs().max()).item<double>();
}

TEST(FusedAdam, MatchesAdamToRounding) {
  std::vector<torch::Tensor> fused_state, ref_state;
  const auto fused = RunSteps<FusedAdam>(torch::kFloat, &fused_state);
  const auto ref = RunSteps<torch::optim::Adam>(torch::kFloat, &ref_state);
  ASSERT_EQ(fused.size(), ref.size());
  for (size_t i = 0; i < fused.size(); ++i) {
    EXPECT_LE(MaxRelDiff(fused[i].detach(), ref[i].detach()), 1e-6) << "param " << i;
  }
  for (size_t i = 0; i < fused_state.size(); ++i) {
    EXPECT_LE(MaxRelDiff(fused_state[i], ref_state[i]), 1e-6) << "state " << i;
  }
}

TEST(FusedAdam, OtherDtypesTakeAdamsPath) {
  std::vector<torch::Tensor> fused_state, ref_state;
  const auto fused = RunSteps<FusedAdam>(torch::kDouble, &fused_state);
  const auto ref = RunSteps<torch::optim::Adam>(torch::kDouble, &ref_state);
  for (size_t i = 0; i < fused.size(); ++i) EXPECT_TRUE(torch::equal(fused[i], ref[i]));
}

// The update of one element written out by hand: the formula, not just agreement with Adam.
TEST(FusedAdam, OneElementByHand) {
  float p = 1.0f, g = 0.5f, m = 0.1f, v = 0.04f;
  internal::FusedAdamUpdate(&p, &g, &m, &v, 1, 0.01, 0.9, 0.999, 1e-8, 0.1, 2);
  const double gd = 0.5 + 0.1 * 1.0;
  const double m2 = 0.9 * 0.1 + 0.1 * gd, v2 = 0.999 * 0.04 + 0.001 * gd * gd;
  const double bc1 = 1 - 0.9 * 0.9, bc2 = 1 - 0.999 * 0.999;
  const double p2 = 1.0 - 0.01 / bc1 * m2 / (std::sqrt(v2) / std::sqrt(bc2) + 1e-8);
  EXPECT_NEAR(m, m2, 1e-7);
  EXPECT_NEAR(v, v2, 1e-7);
  EXPECT_NEAR(p, p2, 1e-6);
}

}  // namespace
}  // namespace reid::trainer
