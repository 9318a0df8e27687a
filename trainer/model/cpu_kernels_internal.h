// What the fused CPU kernels' files (cpu_kernels.cc, cpu_attention.cc, cpu_layer_norm.cc) share;
// other code uses cpu_kernels.h.
#pragma once

#include <cstdint>

#include "base/torch_glog.h"
#include "trainer/model/cpu_kernels.h"

namespace reid::model::internal {

constexpr int64_t kGrain = 32768;  // elements per task, as ATen's elementwise kernels

using ::reid::model::CpuHasAvx2Fma;  // declared in cpu_kernels.h

// A CPU float32 strided tensor, while the fused kernels are on (SetFusedCpuKernels).
bool TakesFusedPath(const torch::Tensor& x);

// A tensor handed to an autograd Function outside its differentiable inputs (an attention mask:
// no gradient, possibly undefined).
struct ConstantMask {
  torch::Tensor mask;
};

// One row of softmax(s + mask) (mask may be null) into out, as ATen's softmax computes it (max,
// exp(z - max), their sum in ATen's order, times its reciprocal).
void SoftmaxRow(const float* s, const float* mask, float* out, int64_t n);

// One row of its backward: gs = (gp - sum(gp * p)) * p.
void SoftmaxBackwardRow(const float* gp, const float* p, float* gs, int64_t n);

}  // namespace reid::model::internal
