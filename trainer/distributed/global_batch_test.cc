// Single-process tests of the global-batch layer: sync batch norm equals torch's BatchNorm1d in
// forward, backward and running statistics; the all-gather is an exact no-op on one rank.
#include "trainer/distributed/global_batch.h"

#include <gtest/gtest.h>

#include "trainer/distributed/comm.h"
#include "trainer/distributed/test_util.h"

namespace reid::dist {
namespace {

void CompareWithTorchBatchNorm(Communicator* comm, std::vector<int64_t> shape) {
  torch::manual_seed(3);
  const int64_t c = shape[1];
  torch::nn::BatchNorm1d ref{torch::nn::BatchNorm1dOptions(c)};
  SyncBatchNorm1d sync(c);
  sync->set_communicator(comm);
  torch::Tensor w = torch::randn({c}), b = torch::randn({c});
  {
    torch::NoGradGuard g;
    ref->weight.copy_(w);
    ref->bias.copy_(b);
    sync->weight.copy_(w);
    sync->bias.copy_(b);
  }
  for (int step = 0; step < 3; ++step) {
    torch::Tensor x = torch::randn(shape) * 3 + 1;
    torch::Tensor x1 = x.clone().requires_grad_(true), x2 = x.clone().requires_grad_(true);
    torch::Tensor dy = torch::randn(shape);
    torch::Tensor y1 = ref->forward(x1), y2 = sync->forward(x2);
    ExpectClose(y2, y1, 1e-5, "forward");
    (y1 * dy).sum().backward();
    (y2 * dy).sum().backward();
    ExpectClose(x2.grad(), x1.grad(), 1e-5, "grad x");
    ExpectClose(sync->weight.grad(), ref->weight.grad(), 1e-5, "grad weight");
    ExpectClose(sync->bias.grad(), ref->bias.grad(), 1e-5, "grad bias");
    ExpectClose(sync->running_mean, ref->running_mean, 1e-6, "running_mean");
    ExpectClose(sync->running_var, ref->running_var, 1e-6, "running_var");
  }
  EXPECT_EQ(sync->num_batches_tracked.item<int64_t>(), 3);
  ref->eval();
  sync->eval();
  torch::Tensor x = torch::randn(shape);
  ExpectClose(sync->forward(x), ref->forward(x), 1e-6, "eval forward");
}

TEST(SyncBatchNormTest, EqualsBatchNorm1dWithoutCommunicator) {
  CompareWithTorchBatchNorm(nullptr, {16, 5});
}

TEST(SyncBatchNormTest, EqualsBatchNorm1dOnOneRank3d) {
  Communicator comm(MakeLocalComm());
  CompareWithTorchBatchNorm(&comm, {6, 4, 7});
}

TEST(SyncBatchNormTest, FunctionalFormOnExistingModule) {
  Communicator comm(MakeLocalComm());
  torch::nn::BatchNorm1d a(8), b(8);
  torch::Tensor x = torch::randn({10, 8});
  ExpectClose(SyncBatchNormForward(&comm, a, x), b->forward(x), 1e-5, "functional");
  ExpectClose(a->running_var, b->running_var, 1e-6, "running_var");
}

TEST(AllGatherWithGradTest, IdentityOnOneRank) {
  Communicator comm(MakeLocalComm());
  torch::Tensor x = torch::randn({4, 3}, torch::requires_grad());
  torch::Tensor y = AllGatherWithGrad(comm, x);
  ExpectClose(y, x, 0, "forward");
  (y * y).sum().backward();
  ExpectClose(x.grad(), 2 * x.detach(), 1e-7, "backward");
  EXPECT_TRUE(GatherForLoss(comm, x, reid::proto::DistConfig::GLOBAL).is_same(x));
}

}  // namespace
}  // namespace reid::dist
