// Learning-rate schedules and optimisers of both stages, as CLIP-ReID configures them
// (docs/design.md 7). Both schedules are stepped once per epoch, at its start,
// with the 1-based epoch number.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/torch_glog.h"
#include "proto/reid_config.pb.h"

namespace reid::trainer {

// Stage 1: timm's CosineLRScheduler(t_initial = max_epochs, lr_min, warmup_lr_init, warmup_t,
// cycle_limit 1, warmup_prefix false) evaluated at t = epoch: linear warm-up for t < warmup_t,
// then cosine from base_lr to lr_min over [0, max_epochs], lr_min from t >= max_epochs on.
double Stage1LearningRate(const proto::Stage1Config& cfg, int epoch);

// Stage 2: WarmupMultiStepLR's factor at last_epoch = epoch: warm-up factor (linear from
// warmup_factor to 1 over warmup_epochs, or constant warmup_factor) times gamma^(number of
// milestones <= epoch). A group's lr is its base lr times this factor.
double Stage2LrFactor(const proto::Stage2Config& cfg, int epoch);

// One parameter group: the tensors and their base lr / weight decay.
struct ParamGroup {
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  double lr = 0;
  double weight_decay = 0;
};

// Stage-2 groups (make_optimizer_2stage): every trainable parameter with base_lr and
// weight_decay, those whose name contains "bias" with base_lr * bias_lr_factor and
// weight_decay_bias. Parameters of equal settings share a group (same update as one group each).
std::vector<ParamGroup> Stage2ParamGroups(
    const proto::Stage2Config& cfg,
    const std::vector<std::pair<std::string, torch::Tensor>>& trainable);

// Adam (coupled L2, as torch.optim.Adam), AdamW or SGD with momentum over `groups`.
std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(proto::OptimizerType type, double momentum,
                                                       const std::vector<ParamGroup>& groups);

// Sets every group's lr to base_lrs[i] * factor (base_lrs in group order).
void SetLearningRates(torch::optim::Optimizer& opt, const std::vector<double>& base_lrs,
                      double factor);
// The lr of group 0 (what the progress line shows).
double CurrentLearningRate(torch::optim::Optimizer& opt);

}  // namespace reid::trainer
