// Differentiable all-gather and synchronised batch norm (see global_batch.h).
#include "trainer/distributed/global_batch.h"

namespace reid::dist {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator* CommFrom(AutogradContext* ctx) {
  return reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
}

struct AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, int64_t comm_ptr) {
    auto* comm = reinterpret_cast<Communicator*>(comm_ptr);
    std::vector<int64_t> rows;
    torch::Tensor out = comm->AllGatherV(x.detach(), &rows);
    int64_t offset = 0;
    for (int r = 0; r < comm->rank(); ++r) offset += rows[r];
    ctx->saved_data["comm"] = comm_ptr;
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["rows"] = x.size(0);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Communicator* comm = CommFrom(ctx);
    torch::Tensor g = grads[0].contiguous().clone();  // (sum B_r, ...)
    comm->AllReduce(g, ReduceOp::kSum);
    int64_t offset = ctx->saved_data["offset"].toInt(), rows = ctx->saved_data["rows"].toInt();
    return {g.narrow(0, offset, rows), torch::Tensor()};
  }
};

// Batch norm of (N, C) with statistics over every rank's rows.
struct SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
  static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor weight,
                               torch::Tensor bias, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps,
                               int64_t comm_ptr) {
    auto* comm = reinterpret_cast<Communicator*>(comm_ptr);
    const int64_t c = x.size(1);
    torch::Tensor xd = x.to(torch::kDouble);
    torch::Tensor stats =
        torch::cat({xd.sum(0), (xd * xd).sum(0),
                    torch::full({1}, static_cast<double>(x.size(0)), xd.options())});  // (2C + 1)
    if (comm != nullptr) comm->AllReduce(stats, ReduceOp::kSum);
    double n = stats[2 * c].item<double>();
    CHECK_GT(n, 1) << "batch norm needs more than one value per channel over the global batch";
    torch::Tensor mean = stats.narrow(0, 0, c) / n;
    torch::Tensor var = (stats.narrow(0, c, c) / n - mean * mean).clamp_min(0);
    torch::Tensor invstd = (var + eps).rsqrt();
    {
      torch::NoGradGuard no_grad;
      if (running_mean.defined()) {
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype()), momentum);
        running_var.mul_(1 - momentum)
            .add_((var * (n / (n - 1))).to(running_var.dtype()), momentum);
      }
    }
    torch::Tensor xhat = ((xd - mean) * invstd).to(x.dtype());  // (N, C)
    torch::Tensor inv = invstd.to(x.dtype());
    ctx->save_for_backward({xhat, inv, weight});
    ctx->saved_data["comm"] = comm_ptr;
    ctx->saved_data["n"] = n;
    return xhat * weight + bias;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    torch::Tensor xhat = saved[0], invstd = saved[1], weight = saved[2];
    torch::Tensor dy = grads[0];  // (N, C)
    const int64_t c = xhat.size(1);
    double n = ctx->saved_data["n"].toDouble();
    torch::Tensor sum_dy = dy.sum(0), sum_dy_xhat = (dy * xhat).sum(0);
    torch::Tensor both = torch::cat({sum_dy, sum_dy_xhat}).to(torch::kDouble);  // (2C)
    Communicator* comm = CommFrom(ctx);
    if (comm != nullptr) comm->AllReduce(both, ReduceOp::kSum);
    torch::Tensor mean_dy = (both.narrow(0, 0, c) / n).to(dy.dtype());
    torch::Tensor mean_dy_xhat = (both.narrow(0, c, c) / n).to(dy.dtype());
    torch::Tensor dx = (weight * invstd) * (dy - mean_dy - xhat * mean_dy_xhat);
    // Parameter gradients stay local: GradSync averages them like any other.
    return {dx,
            sum_dy_xhat,
            sum_dy,
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor AllGatherWithGrad(Communicator& comm, const torch::Tensor& x) {
  return AllGatherFunction::apply(x, reinterpret_cast<int64_t>(&comm));
}

torch::Tensor GatherForLoss(Communicator& comm, const torch::Tensor& x,
                            reid::proto::DistConfig::LossScope scope) {
  if (scope == reid::proto::DistConfig::LOCAL || comm.size() == 1) return x;
  if (!x.requires_grad()) return comm.AllGatherV(x);
  return AllGatherWithGrad(comm, x);
}

torch::Tensor SyncBatchNormForward(Communicator* comm, const torch::Tensor& x,
                                   const torch::Tensor& weight, const torch::Tensor& bias,
                                   torch::Tensor running_mean, torch::Tensor running_var,
                                   bool training, double momentum, double eps) {
  CHECK(x.dim() == 2 || x.dim() == 3)
      << "SyncBatchNorm1d expects (B, C) or (B, C, L), got " << x.sizes();
  const int64_t c = x.size(1);
  torch::Tensor w = weight.defined() ? weight : torch::ones({c}, x.options());
  torch::Tensor b = bias.defined() ? bias : torch::zeros({c}, x.options());
  if (!training) {
    return torch::batch_norm(x, w, b, running_mean, running_var, false, momentum, eps, false);
  }
  torch::Tensor x2 = x.dim() == 3 ? x.transpose(1, 2).reshape({-1, c}) : x;  // (N, C)
  torch::Tensor y = SyncBatchNormFunction::apply(x2, w, b, running_mean, running_var, momentum, eps,
                                                 reinterpret_cast<int64_t>(comm));
  if (x.dim() == 3) y = y.view({x.size(0), x.size(2), c}).transpose(1, 2);
  return y;
}

SyncBatchNorm1dImpl::SyncBatchNorm1dImpl(int64_t num_features, double eps, double momentum,
                                         bool affine)
    : eps_(eps), momentum_(momentum) {
  if (affine) {
    weight = register_parameter("weight", torch::ones({num_features}));
    bias = register_parameter("bias", torch::zeros({num_features}));
  }
  running_mean = register_buffer("running_mean", torch::zeros({num_features}));
  running_var = register_buffer("running_var", torch::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

torch::Tensor SyncBatchNorm1dImpl::forward(const torch::Tensor& x) {
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  return SyncBatchNormForward(comm_, x, weight, bias, running_mean, running_var, is_training(),
                              momentum_, eps_);
}

torch::Tensor SyncBatchNormForward(Communicator* comm, torch::nn::BatchNorm1d& bn,
                                   const torch::Tensor& x) {
  if (!bn->is_training() || !bn->options.track_running_stats()) return bn->forward(x);
  {
    torch::NoGradGuard no_grad;
    bn->num_batches_tracked.add_(1);
  }
  double momentum = bn->options.momentum().value_or(0.1);
  return SyncBatchNormForward(comm, x, bn->weight, bn->bias, bn->running_mean, bn->running_var,
                              true, momentum, bn->options.eps());
}

}  // namespace reid::dist
