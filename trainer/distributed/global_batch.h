// Global-batch collectives with exact gradients: a differentiable all-gather (backward =
// reduce-scatter of the gradient: sum over ranks, then this rank's rows) and synchronised batch
// norm over the global batch. With gradients averaged across ranks (GradSync), a loss computed
// from gathered tensors on every rank gives the same parameters on N ranks as on one.
#pragma once

#include "trainer/distributed/communicator.h"

namespace reid::dist {

// (sum_r B_r, ...) := every rank's x (B_r, ...) in rank order, differentiable: the gradient of
// this rank's rows is the sum over ranks of the gradient of those rows. Collective in forward and
// in backward. `comm` must outlive the backward pass.
torch::Tensor AllGatherWithGrad(Communicator& comm, const torch::Tensor& x);

// What batch-coupled losses see: x itself for LOCAL scope or world size 1, else
// AllGatherWithGrad (GLOBAL). Tensors without grad (labels) are gathered plainly.
torch::Tensor GatherForLoss(Communicator& comm, const torch::Tensor& x,
                            reid::proto::DistConfig::LossScope scope);

// Batch norm over the global batch, exact in forward and backward: statistics (in float64) and
// the two backward reductions are all-reduced. x: (B, C) or (B, C, L). Running statistics are
// updated as torch.nn.BatchNorm1d does (unbiased variance of the global batch). weight/bias may
// be undefined (affine = false). comm == nullptr: plain batch norm on this rank's batch.
torch::Tensor SyncBatchNormForward(Communicator* comm, const torch::Tensor& x,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   torch::Tensor running_mean, torch::Tensor running_var,
                                   bool training, double momentum, double eps);

// torch::nn::BatchNorm1d's parameters and buffers (same names: weight, bias, running_mean,
// running_var, num_batches_tracked), normalised over the global batch in training.
class SyncBatchNorm1dImpl : public torch::nn::Module {
 public:
  explicit SyncBatchNorm1dImpl(int64_t num_features, double eps = 1e-5, double momentum = 0.1,
                               bool affine = true);
  // Communicator for training-mode statistics; nullptr = this rank's batch only.
  void set_communicator(Communicator* comm) { comm_ = comm; }
  torch::Tensor forward(const torch::Tensor& x);  // (B, C) or (B, C, L)

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  Communicator* comm_ = nullptr;
  double eps_, momentum_;
};
TORCH_MODULE(SyncBatchNorm1d);

// Runs an existing torch::nn::BatchNorm1d (e.g. a model's BN neck) with global-batch statistics
// in training mode, and as the module itself otherwise.
torch::Tensor SyncBatchNormForward(Communicator* comm, torch::nn::BatchNorm1d& bn,
                                   const torch::Tensor& x);

}  // namespace reid::dist
