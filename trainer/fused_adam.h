// torch.optim.Adam (L2 weight decay coupled into the gradient, no amsgrad) with its update made in
// one pass over each CPU float32 parameter: LibTorch 1.13's Adam::step runs nine passes and makes
// three temporaries of the parameter's size per parameter (the decayed gradient, sqrt(v), the
// denominator), which for ViT-B/16's 86 M parameters is memory traffic and page faults comparable
// to a matrix product of the step. The arithmetic is Adam::step's, in its order and in float
// (the scalars rounded to float as ATen rounds them), so a step differs from Adam's by rounding
// only (tested to 1e-6 relative). The state is Adam's (AdamParamState: step, exp_avg, exp_avg_sq,
// keyed as Adam keys it), so checkpoints and Adam's own serialisation read it unchanged. Anything
// else (a GPU or non-float32 parameter, amsgrad, a sparse gradient) takes Adam::step.
#pragma once

#include <vector>

#include "base/torch_glog.h"

namespace reid::trainer {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

namespace internal {
// One parameter's update (exposed for the test): n floats of param, grad, exp_avg, exp_avg_sq;
// `step` is the parameter's step count after this update (>= 1).
void FusedAdamUpdate(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int64_t step);
}  // namespace internal

}  // namespace reid::trainer
