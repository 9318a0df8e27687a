// torch.optim.Adam (L2 weight decay coupled into the gradient) in one pass over each parameter's
// elements on CPU float32, where LibTorch 1.13's Adam runs nine operators, each a pass over the
// parameter-sized tensors (and two temporaries): measured for ViT-B/16's 85M parameters on this
// project's 2-core machine, 0.10 s a step against a bare copy's 0.012 s. Its state is Adam's own
// (AdamParamState: step, exp_avg, exp_avg_sq), so checkpoints and optimizer_state.cc see an Adam.
#pragma once

#include "base/torch_glog.h"

namespace reid::trainer {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;

  // Adam's step. The fused pass where every parameter with a gradient is a contiguous CPU float32
  // tensor with a dense gradient of its layout and no group uses amsgrad; otherwise Adam::step.
  // Each element follows LibTorch's operators' float arithmetic in their order (the scalars
  // rounded to float as they do), so the two agree to float rounding (fused_adam_test.cc: 1e-6).
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace reid::trainer
