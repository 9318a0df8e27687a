// Autocast scope and dynamic loss scaling (see amp.h).
#include "trainer/amp.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include <cmath>

namespace reid::trainer {
namespace {

// LibTorch moved autocast's per-device switches to a device-type argument in 2.4.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool CudaAutocastEnabled() { return at::autocast::is_autocast_enabled(at::kCUDA); }
void SetCudaAutocast(bool on) { at::autocast::set_autocast_enabled(at::kCUDA, on); }
torch::ScalarType CudaAutocastDtype() { return at::autocast::get_autocast_dtype(at::kCUDA); }
void SetCudaAutocastDtype(torch::ScalarType t) { at::autocast::set_autocast_dtype(at::kCUDA, t); }
#else
bool CudaAutocastEnabled() { return at::autocast::is_enabled(); }
void SetCudaAutocast(bool on) { at::autocast::set_enabled(on); }
torch::ScalarType CudaAutocastDtype() { return at::autocast::get_autocast_gpu_dtype(); }
void SetCudaAutocastDtype(torch::ScalarType t) { at::autocast::set_autocast_gpu_dtype(t); }
#endif

}  // namespace

std::string Precision::Describe() const {
  if (!autocast) return "fp32";
  return std::string(dtype == torch::kHalf ? "fp16" : "bf16") + " autocast" +
         (loss_scaling ? " with dynamic loss scaling" : "");
}

Precision PrecisionFor(bool amp, proto::AmpDtype dtype, const torch::Device& device) {
  Precision p;
  if (!amp || !device.is_cuda()) return p;  // fp32 on CPU
  p.autocast = true;
  p.dtype = dtype == proto::BFLOAT16 ? torch::kBFloat16 : torch::kHalf;
  p.loss_scaling = p.dtype == torch::kHalf;
  return p;
}

AutocastScope::AutocastScope(const Precision& precision) : active_(precision.autocast) {
  if (!active_) return;
  prev_enabled_ = CudaAutocastEnabled();
  prev_dtype_ = CudaAutocastDtype();
  SetCudaAutocast(true);
  SetCudaAutocastDtype(precision.dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetCudaAutocast(prev_enabled_);
  SetCudaAutocastDtype(prev_dtype_);
}

LossScaler::LossScaler(bool enabled, LossScalerOptions options)
    : enabled_(enabled), options_(options), scale_(enabled ? options.init_scale : 1.0) {}

torch::Tensor LossScaler::Scale(const torch::Tensor& loss) const {
  if (!enabled_) return loss;
  // As GradScaler: the loss times a float32 scale (a power of two times init_scale: exact).
  return loss * torch::full({}, static_cast<float>(scale_), loss.options().dtype(torch::kFloat));
}

bool LossScaler::UnscaleAndCheck(const std::vector<torch::Tensor>& params,
                                 dist::Communicator& comm) const {
  if (!enabled_) return false;
  // GradScaler: inv_scale = float32(1 / float64(scale)); grads *= inv_scale; found_inf when
  // any unscaled gradient is inf or NaN.
  const double inv = static_cast<double>(static_cast<float>(1.0 / scale_));
  bool found_inf = false;
  for (const torch::Tensor& p : params) {
    torch::Tensor g = p.grad();
    if (!g.defined()) continue;
    g.mul_(inv);
    if (!found_inf && !torch::isfinite(g).all().item<bool>()) found_inf = true;
  }
  // GradSync made the gradients equal on every rank, so the verdicts agree already; the max
  // makes that a guarantee (a rank that skips alone would desynchronise the models).
  torch::Tensor flag = torch::full({1}, found_inf ? 1 : 0, torch::kInt32);
  if (comm.size() > 1) comm.AllReduce(flag, dist::ReduceOp::kMax);
  return flag.item<int32_t>() != 0;
}

void LossScaler::Update(bool found_inf) {
  if (!enabled_) return;
  if (found_inf) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
    return;
  }
  if (++growth_tracker_ == options_.growth_interval) {
    const double grown = scale_ * options_.growth_factor;
    // As GradScaler: keep the old scale when growing would overflow float32.
    if (std::isfinite(static_cast<float>(grown))) scale_ = grown;
    growth_tracker_ = 0;
  }
}

NamedTensors LossScaler::State() const {
  return {{"scale", torch::full({1}, scale_, torch::kFloat64)},
          {"growth_tracker", torch::full({1}, growth_tracker_, torch::kInt64)}};
}

Status LossScaler::Restore(const NamedTensors& state, const std::string& what) {
  double scale = 0;
  int64_t tracker = -1;
  for (const auto& [name, t] : state) {
    if (t.numel() != 1) continue;
    if (name == "scale" && t.scalar_type() == torch::kFloat64) scale = t.item<double>();
    if (name == "growth_tracker" && t.scalar_type() == torch::kInt64) tracker = t.item<int64_t>();
  }
  if (!(std::isfinite(scale) && scale > 0) || tracker < 0 || tracker >= options_.growth_interval) {
    return Status::DataLoss(what +
                            ": expected a positive finite 'scale' (float64) and a "
                            "'growth_tracker' (int64) below the growth interval");
  }
  scale_ = scale;
  growth_tracker_ = tracker;
  return Status::Ok();
}

}  // namespace reid::trainer
