// An optimiser's state as named tensors, for checkpoints (optimizer.pt): written and read as a
// torch.save zip like every checkpoint file, so that resuming runs no code from the file. Covers
// the optimisers MakeOptimizer builds (Adam, AdamW, SGD) and restores them exactly: a resumed run
// takes the same steps, bit for bit, as one that never stopped.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"

namespace reid::trainer {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// The per-parameter state of `opt` as "group<G>/<NAME>/<FIELD>": G the parameter group's index,
// NAME the parameter's name in `named_params` (the model's named parameters), FIELD one of
//   Adam, AdamW: step (int64, 0-dim), exp_avg, exp_avg_sq, max_exp_avg_sq (with amsgrad)
//   SGD:         momentum_buffer (with momentum)
// A parameter without state (never stepped) has no entries. Internal for a parameter of `opt`
// missing from `named_params` or an optimiser of another type.
StatusOr<NamedTensors> OptimizerStateTensors(const torch::optim::Optimizer& opt,
                                             const NamedTensors& named_params);

// Replaces the state of `opt` (built as the one that was saved: same type, groups and parameters)
// with exact copies of `state`, moved to each parameter's device. Every entry must fit: its group
// and parameter exist in `opt`, its field belongs to the optimiser (max_exp_avg_sq exactly when
// the group has amsgrad), moments have the parameter's shape and dtype, step is one int64 >= 0,
// and a parameter's fields are all there or none. DataLoss naming `what` and the entry
// otherwise, with `opt` unchanged.
Status RestoreOptimizerState(torch::optim::Optimizer* opt, const NamedTensors& named_params,
                             const NamedTensors& state, const std::string& what);

}  // namespace reid::trainer
