// GradSync under mpirun: after backward every rank holds the average of the per-rank gradients
// (computed serially here from every rank's data), with several buckets, a float64 parameter,
// no-sync accumulation, a parameter unused on one rank, and parameters broadcast from rank 0; a
// model that differs between ranks is an error on every rank.
#include <gtest/gtest.h>

#include "base/status_test_util.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/distributed/mpi_comm.h"

namespace reid::dist {
namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 64));
    fc3 = register_module("fc3", torch::nn::Linear(64, 3));
    side = register_module("side", torch::nn::Linear(8, 3));
    scale = register_parameter("scale", torch::ones({3}, torch::kDouble));
  }
  // `use_side`: the side branch takes part (lets a rank leave a parameter unused).
  torch::Tensor forward(const torch::Tensor& x, bool use_side) {
    torch::Tensor h = fc3(torch::tanh(fc2(torch::tanh(fc1(x)))));
    if (use_side) h = h + side(x);
    return h * scale.to(torch::kFloat);
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr}, side{nullptr};
  torch::Tensor scale;
};
TORCH_MODULE(Net);

NamedTensors Params(Net& net) {
  NamedTensors out;
  for (const auto& p : net->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

torch::Tensor Data(int rank, int micro) {
  torch::manual_seed(1000 + 10 * rank + micro);
  return torch::randn({5 + rank, 8});  // uneven local batches on purpose
}

// Rank 0 leaves the side branch unused: entirely with one micro-step, and in all but the first
// micro-step when accumulating (its local gradient then exists but gets nothing in the synced
// backward, and must still count).
bool UsesSide(int rank, int micro, int micro_steps) {
  return rank != 0 || (micro_steps > 1 && micro == 0);
}

// Gradients a rank would have after `micro` micro-steps without synchronisation.
std::vector<torch::Tensor> LocalGrads(Net& net, int rank, int micro_steps) {
  net->zero_grad();
  for (int m = 0; m < micro_steps; ++m) {
    net->forward(Data(rank, m), UsesSide(rank, m, micro_steps)).pow(2).mean().backward();
  }
  std::vector<torch::Tensor> grads;
  for (auto& p : net->parameters()) {
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  }
  return grads;
}

void CheckAveraged(int micro_steps) {
  Communicator comm(MakeMpiComm(MPI_COMM_WORLD, {}));
  torch::manual_seed(7 + comm.rank());  // different init per rank: GradSync broadcasts rank 0's
  Net net;
  torch::manual_seed(7);
  Net ref;  // rank 0's initial parameters
  GradSyncOptions options;
  options.first_bucket_mb = 600.0 / (1 << 20);
  options.bucket_cap_mb = 4000.0 / (1 << 20);
  options.overlap = micro_steps == 1;  // the other test launches all buckets after backward
  StatusOr<std::unique_ptr<GradSync>> created = GradSync::Create(comm, Params(net), {}, options);
  ASSERT_OK(created);
  GradSync& sync = **created;
  ASSERT_GE(sync.buckets().size(), 4u);
  auto p = net->parameters(), q = ref->parameters();
  for (size_t i = 0; i < p.size(); ++i) ASSERT_TRUE(p[i].equal(q[i])) << "broadcast " << i;

  std::vector<torch::Tensor> expected;
  for (int r = 0; r < comm.size(); ++r) {
    auto g = LocalGrads(ref, r, micro_steps);
    if (expected.empty()) expected.resize(g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      expected[i] = expected[i].defined() ? expected[i] + g[i] : g[i];
    }
  }
  for (int step = 0; step < 4; ++step) {            // state must reset between steps
    net->zero_grad(/*set_to_none=*/step % 2 == 0);  // both: fresh gradients, and bucket views
    for (int m = 0; m < micro_steps; ++m) {
      sync.set_sync(m == micro_steps - 1);
      net->forward(Data(comm.rank(), m), UsesSide(comm.rank(), m, micro_steps))
          .pow(2)
          .mean()
          .backward();
    }
    for (size_t i = 0; i < p.size(); ++i) {
      torch::Tensor want = expected[i] / comm.size();
      double err = (p[i].grad() - want).abs().max().item<double>();
      EXPECT_LE(err, 1e-6 * (1 + want.abs().max().item<double>()))
          << sync.names()[i] << " step " << step;
    }
  }
  EXPECT_EQ(sync.stats().steps, 4);
}

TEST(GradSyncMpiTest, GradientIsAverageOfPerRankGradients) { CheckAveraged(1); }

TEST(GradSyncMpiTest, NoSyncAccumulationThenSync) { CheckAveraged(3); }

TEST(GradSyncMpiTest, ModelMismatchIsAClearErrorOnEveryRank) {
  Communicator comm(MakeMpiComm(MPI_COMM_WORLD, {}));
  torch::Tensor a = torch::zeros({4, 4}), b = torch::zeros({comm.rank() == 1 ? 5 : 4});
  NamedTensors params = {{"fc.weight", a}, {"fc.bias", b}};
  const Status s = VerifyAcrossRanks(comm, params, "trainable parameters");
  ASSERT_FALSE(s.ok()) << "no error on rank " << comm.rank();
  EXPECT_NE(s.message().find("fc.bias"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[5]"), std::string::npos) << s.message();
  a.requires_grad_(true);
  b.requires_grad_(true);
  StatusOr<std::unique_ptr<GradSync>> sync =
      GradSync::Create(comm, params, {}, GradSyncOptions::FromConfig(reid::proto::DistConfig()));
  ASSERT_FALSE(sync.ok()) << "GradSync::Create on rank " << comm.rank();
  EXPECT_EQ(sync.status().message(), s.message());
  NamedTensors same = {{"fc.weight", a}};
  EXPECT_OK(VerifyAcrossRanks(comm, same, "trainable parameters"));
}

}  // namespace
}  // namespace reid::dist
