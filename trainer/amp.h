// Mixed precision on CUDA (docs/design.md 5.5): the autocast region around the forward pass and the
// dynamic loss scaling that float16 needs (the algorithm of torch.cuda.amp.GradScaler), with the
// skip decision agreed by every rank. bfloat16 autocast needs no scaling; on CPU training is fp32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "proto/reid_config.pb.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed/communicator.h"

namespace reid::trainer {

// What a stage runs in: the autocast dtype (undefined = fp32 throughout) and whether the loss
// is scaled. From the stage's `amp` / `amp_dtype` and the device.
struct Precision {
  bool autocast = false;
  torch::ScalarType dtype = torch::kFloat;  // kHalf or kBFloat16 when autocast
  bool loss_scaling = false;                // float16 only
  std::string Describe() const;
};
Precision PrecisionFor(bool amp, proto::AmpDtype dtype, const torch::Device& device);

// RAII: autocast on CUDA with `precision.dtype` inside the scope (nothing when !autocast);
// restores the previous state and clears the cast cache on exit, as torch.autocast does.
class AutocastScope {
 public:
  explicit AutocastScope(const Precision& precision);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kHalf;
};

// GradScaler's defaults.
struct LossScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

// Dynamic loss scaling. Per step: backward of Scale(loss); then UnscaleAndCheck() (collective)
// divides the gradients by the scale and says whether any is inf/NaN on any rank; the optimiser
// steps only when none is; Update() backs the scale off after an overflow and grows it after
// growth_interval clean steps in a row. Disabled, it is the identity and never skips.
class LossScaler {
 public:
  LossScaler() = default;
  LossScaler(bool enabled, LossScalerOptions options);
  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  torch::Tensor Scale(const torch::Tensor& loss) const;
  // Collective when enabled: every rank must call it with its gradients (after GradSync). True
  // when a gradient is not finite on some rank (then the step must be skipped).
  bool UnscaleAndCheck(const std::vector<torch::Tensor>& params, dist::Communicator& comm) const;
  void Update(bool found_inf);
  // Checkpoint state ("scale" float64, "growth_tracker" int64) and its restore.
  NamedTensors State() const;
  Status Restore(const NamedTensors& state, const std::string& what);

 private:
  bool enabled_ = false;
  LossScalerOptions options_;
  double scale_ = 1.0;
  int64_t growth_tracker_ = 0;
};

}  // namespace reid::trainer
