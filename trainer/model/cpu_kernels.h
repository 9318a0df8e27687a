// Fused CPU float32 kernels for the transformer's memory-bound steps, where LibTorch 1.13 runs
// one pass (and one temporary) per operator: QuickGELU and the attention softmax with its scale
// and mask, forward and backward in one pass each. Each entry point takes the fused path for CPU
// float32 tensors (while SetFusedCpuKernels(true), the default) and otherwise runs the unfused
// LibTorch ops, which the *Unfused functions expose; cpu_kernels_test.cc holds the two to 1e-6
// relative (max |fused - unfused| / max |unfused|), forward and gradients.
#pragma once

#include "base/torch_glog.h"

namespace reid::model {

// Process-wide switch for the fused paths (default on); off, every entry point runs its unfused
// ops. For benchmarks and tests that compare the two.
void SetFusedCpuKernels(bool on);
bool FusedCpuKernels();

// CLIP's QuickGELU, x * sigmoid(1.702 x), any shape. Fused: one pass forward (saving x only) and
// one backward (the sigmoid recomputed), against three and five passes unfused.
torch::Tensor QuickGelu(const torch::Tensor& x);
torch::Tensor QuickGeluUnfused(const torch::Tensor& x);

// softmax(scores * scale + mask, -1) over the last dimension: scores (..., Lq, Lk), mask (Lq, Lk)
// additive (0 or -inf; may be undefined). Fused: one pass per row forward (saving the output only)
// and one backward. The unfused form is what the attention ran before: with scale applied to the
// scores rather than to q, which for the power-of-two scales of CLIP's heads (1/8 at head width
// 64) is the same arithmetic exactly.
torch::Tensor ScaledMaskedSoftmax(const torch::Tensor& scores, double scale,
                                  const torch::Tensor& mask);
torch::Tensor ScaledMaskedSoftmaxUnfused(const torch::Tensor& scores, double scale,
                                         const torch::Tensor& mask);

}  // namespace reid::model
