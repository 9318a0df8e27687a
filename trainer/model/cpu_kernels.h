// Fused CPU float32 kernels for the transformer's steps where LibTorch 1.13 runs one pass (and one
// temporary) per operator: QuickGELU, and the whole attention of a block (its two products, the
// softmax with its scale and mask, the heads' copies), forward and backward. Each entry point takes
// the fused path for CPU float32 tensors (while SetFusedCpuKernels(true), the default) and
// otherwise runs the unfused LibTorch ops, which the *Unfused functions expose; cpu_kernels_test.cc
// holds the two to 1e-6 relative (max |fused - unfused| / max |unfused|), forward and gradients.
#pragma once

#include "base/torch_glog.h"

namespace reid::model {

// Whether this CPU has AVX2 and FMA (checked once): the vectorised builds of the fused kernels
// and of FusedAdam (trainer/fused_adam.h).
bool CpuHasAvx2Fma();

// Process-wide switch for the fused paths (default on); off, every entry point runs its unfused
// ops. For benchmarks and tests that compare the two.
void SetFusedCpuKernels(bool on);

// CLIP's QuickGELU, x * sigmoid(1.702 x), any shape. Fused: one pass forward (saving x only) and
// one backward (the sigmoid recomputed), against three and five passes unfused.
torch::Tensor QuickGelu(const torch::Tensor& x);
torch::Tensor QuickGeluUnfused(const torch::Tensor& x);

// Multi-head attention over the packed input projection: qkv (B, L, 3W) holds q, k, v side by
// side, each of `heads` heads of width hd = W / heads; returns softmax(q k^T / sqrt(hd) + mask) v
// per head, heads side by side: (B, L, W); mask (L, L) additive or undefined. Fused: per (batch,
// head) the two products, the softmax and the scatter into (B, L, W) in one task, reading q, k, v
// in place (saving qkv and the probabilities; the backward likewise writes the gradient of qkv
// directly), for up to 256 tokens and head widths up to 256; unfused (longer, or not CPU float32):
// nn.MultiheadAttention's ops (scaled q, matmul, mask, softmax, matmul, transpose, reshape).
torch::Tensor Attention(const torch::Tensor& qkv, int64_t heads, const torch::Tensor& mask);
torch::Tensor AttentionUnfused(const torch::Tensor& qkv, int64_t heads, const torch::Tensor& mask);

// A linear layer, x (..., K) w^T (N, K) + b (N) -> (..., N), b optional. Fused (recording
// gradients, built with oneDNN: REID_HAVE_DNNL), its forward product and its backward's (the
// input's and the weight's gradients) run in oneDNN's sgemm, split by output columns over the
// intra-op threads, instead of LibTorch's BLAS (OpenBLAS on Debian); otherwise LibTorch's linear.
torch::Tensor Linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
torch::Tensor LinearUnfused(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
// Whether Linear's fused backward exists in this build (oneDNN found at build time).
bool LinearRunsOneDnn();

}  // namespace reid::model
