// FusedAdam against LibTorch's Adam: the same parameters (1e-6 relative) and state after several
// steps, with and without weight decay, sizes with a partial last vector and a parallel split;
// where it cannot fuse (amsgrad, a double parameter) it is Adam's step exactly.
#include "trainer/fused_adam.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace reid::trainer {
namespace {

double RelativeError(const torch::Tensor& got, const torch::Tensor& want) {
  return (got - want).abs().max().item<double>() / (want.abs().max().item<double>() + 1e-30);
}

struct Run {
  std::vector<torch::Tensor> params;
  std::unique_ptr<torch::optim::Optimizer> opt;
};

// Two groups (decayed and not), `steps` steps with the same gradients.
template <typename Opt>
std::vector<torch::Tensor> Train(torch::Dtype dtype, bool amsgrad, int steps,
                                 std::unique_ptr<torch::optim::Optimizer>* kept = nullptr) {
  torch::manual_seed(7);
  std::vector<torch::Tensor> params;
  for (int64_t n : {5, 8, 1003, 70001}) params.push_back(torch::randn({n}, dtype).requires_grad_());
  params.push_back(torch::randn({96, 130}, dtype).requires_grad_());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{params[0], params[2], params[4]},
                      std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(3e-3).weight_decay(1e-4).amsgrad(amsgrad)));
  groups.emplace_back(std::vector<torch::Tensor>{params[1], params[3]},
                      std::make_unique<torch::optim::AdamOptions>(
                          torch::optim::AdamOptions(1e-3).amsgrad(amsgrad)));
  auto opt = std::make_unique<Opt>(groups, torch::optim::AdamOptions(1e-3));
  for (int s = 0; s < steps; ++s) {
    for (auto& p : params) p.mutable_grad() = torch::randn(p.sizes(), dtype) * (s + 1);
    opt->step();
  }
  std::vector<torch::Tensor> out;
  for (auto& p : params) out.push_back(p.detach().clone());
  if (kept != nullptr) *kept = std::move(opt);
  return out;
}

TEST(FusedAdamTest, MatchesLibTorchAdam) {
  std::unique_ptr<torch::optim::Optimizer> fused, plain;
  const auto got = Train<FusedAdam>(torch::kFloat32, false, 5, &fused);
  const auto want = Train<torch::optim::Adam>(torch::kFloat32, false, 5, &plain);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_LT(RelativeError(got[i], want[i]), 1e-6) << "parameter " << i;
    EXPECT_FALSE(torch::equal(got[i], torch::zeros_like(got[i])));
  }
  // Adam's state, as checkpoints save it.
  ASSERT_EQ(fused->state().size(), plain->state().size());
  const auto& fp = fused->param_groups()[0].params()[2];
  const auto& pp = plain->param_groups()[0].params()[2];
  const auto& fs = static_cast<const torch::optim::AdamParamState&>(
      *fused->state().at(c10::guts::to_string(fp.unsafeGetTensorImpl())));
  const auto& ps = static_cast<const torch::optim::AdamParamState&>(
      *plain->state().at(c10::guts::to_string(pp.unsafeGetTensorImpl())));
  EXPECT_EQ(fs.step(), 5);
  EXPECT_EQ(fs.step(), ps.step());
  EXPECT_LT(RelativeError(fs.exp_avg(), ps.exp_avg()), 1e-6);
  EXPECT_LT(RelativeError(fs.exp_avg_sq(), ps.exp_avg_sq()), 1e-6);
}

TEST(FusedAdamTest, FallsBackToAdamWhereItCannotFuse) {
  for (const bool amsgrad : {true, false}) {
    const torch::Dtype dtype = amsgrad ? torch::kFloat32 : torch::kFloat64;
    const auto got = Train<FusedAdam>(dtype, amsgrad, 3);
    const auto want = Train<torch::optim::Adam>(dtype, amsgrad, 3);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(torch::equal(got[i], want[i])) << "parameter " << i << ", amsgrad " << amsgrad;
    }
  }
}

}  // namespace
}  // namespace reid::trainer
