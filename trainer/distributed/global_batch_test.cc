// Single-process tests of the tensor layer: sync batch norm equals torch's BatchNorm1d in forward,
// backward and running statistics; GradSync and the all-gather are exact no-ops on one rank.
#include "trainer/distributed/global_batch.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iomanip>
#include <limits>

#include "trainer/distributed/comm.h"
#include "trainer/distributed/grad_sync.h"

namespace reid::dist {
namespace {

void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, double tol, const char* what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  double err = (a - b).abs().max().item<double>();
  double scale = b.abs().max().item<double>() + 1e-12;
  EXPECT_LE(err / scale, tol) << what << ": max abs error " << err << " scale " << scale;
}

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

TEST(GradSyncTest, OneRankKeepsGradientsAndAccumulates) {
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(6, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  Communicator comm(MakeLocalComm());
  NamedTensors params;
  for (const auto& p : net->named_parameters()) params.emplace_back(p.key(), p.value());
  GradSyncOptions options;
  options.first_bucket_mb = 100.0 / (1 << 20);  // tiny buckets: several of them
  options.bucket_cap_mb = 300.0 / (1 << 20);
  GradSync sync(comm, params, {}, options);
  EXPECT_GE(sync.buckets().size(), 3u);
  torch::Tensor x = torch::randn({5, 6});
  // Reference: one backward's gradients. Two backwards accumulated (the first with sync off, as
  // under gradient accumulation) must give twice them, synchronised once.
  net->zero_grad();
  net->forward(x).pow(2).sum().backward();
  std::vector<torch::Tensor> once;
  for (auto& p : net->parameters()) once.push_back(p.grad().clone());
  net->zero_grad();
  sync.set_sync(false);
  net->forward(x).pow(2).sum().backward();
  sync.set_sync(true);
  net->forward(x).pow(2).sum().backward();
  auto ps = net->parameters();
  for (size_t i = 0; i < ps.size(); ++i) ExpectClose(ps[i].grad(), 2 * once[i], 1e-6, "accum");
  EXPECT_EQ(sync.stats().steps, 2);
  // Every bucket was launched from a hook, during backward, in both synced steps.
  EXPECT_EQ(sync.stats().launched_during_backward, 2 * static_cast<int64_t>(sync.buckets().size()));
  sync.set_overlap(false);
  net->forward(x).pow(2).sum().backward();
  EXPECT_EQ(sync.stats().launched_during_backward,
            2 * static_cast<int64_t>(
                    sync.buckets().size()));  // the reference backward above was synced too
}

TEST(CommunicatorTest, WorldOfOneNeedsNoMpi) {
  auto comm = MakeCommunicator(Ranks(), reid::proto::DistConfig());
  EXPECT_EQ(comm->size(), 1);
  EXPECT_STREQ(comm->host().backend(), "local");
  torch::Tensor t = torch::arange(4).view({2, 2});
  EXPECT_TRUE(comm->AllGatherV(t).equal(t));
}

TEST(GradSyncTest, FrozenParametersAreLeftOut) {
  torch::nn::Linear a(3, 3), b(3, 3);
  b->weight.requires_grad_(false);
  Communicator comm(MakeLocalComm());
  NamedTensors params = {{"a.weight", a->weight}, {"a.bias", a->bias}, {"b.weight", b->weight}};
  GradSync sync(comm, params, {}, {});
  EXPECT_EQ(sync.names(), (std::vector<std::string>{"a.weight", "a.bias"}));
}

// The wire conversions of float16 / bfloat16 against LibTorch's: every 16-bit pattern to float,
// and float to 16 bits for edge values, ties, subnormals, overflow and many random floats.
TEST(Float16Test, ConversionsMatchLibTorch) {
  torch::Tensor bits = torch::arange(65536, torch::kInt).to(torch::kShort);  // every pattern
  for (bool half : {true, false}) {
    torch::Tensor as16 = bits.view(half ? torch::kHalf : torch::kBFloat16);
    torch::Tensor expect = as16.to(torch::kFloat);
    const int16_t* b = bits.data_ptr<int16_t>();
    const float* e = expect.data_ptr<float>();
    for (int i = 0; i < 65536; ++i) {
      const uint16_t v = static_cast<uint16_t>(b[i]);
      const float got = half ? HalfToFloat(v) : BFloat16ToFloat(v);
      if (std::isnan(e[i])) {
        ASSERT_TRUE(std::isnan(got)) << std::hex << v;
      } else {
        ASSERT_EQ(got, e[i]) << (half ? "half " : "bf16 ") << std::hex << v;
      }
    }
  }
  torch::manual_seed(3);
  std::vector<torch::Tensor> parts = {
      torch::randn({20000}) * 1e3, torch::randn({20000}) * 1e-5, torch::randn({20000}) * 1e-7,
      torch::randn({2000}) * 7e4, torch::randn({2000}) * 1e-30,
      // every float16 value and every midpoint between neighbours (ties to even)
      (torch::arange(0, 0x7C00, torch::kInt)
           .to(torch::kShort)
           .view(torch::kHalf)
           .to(torch::kFloat)),
      torch::tensor({0.f, -0.f, 65504.f, 65519.f, 65520.f, 65536.f, 1e30f, -1e30f,
                     std::numeric_limits<float>::infinity(),
                     -std::numeric_limits<float>::infinity(), 5.9604645e-8f, 2.9802322e-8f,
                     2.9802326e-8f, 6.1035156e-5f, 3.3895314e38f, 3.4028235e38f})};
  torch::Tensor h = parts[5];
  parts.push_back((h.slice(0, 0, -1) + h.slice(0, 1)) / 2);
  torch::Tensor values = torch::cat(parts);
  for (bool half : {true, false}) {
    torch::Tensor expect = values.to(half ? torch::kHalf : torch::kBFloat16).view(torch::kShort);
    const float* v = values.data_ptr<float>();
    const int16_t* e = expect.data_ptr<int16_t>();
    for (int64_t i = 0; i < values.numel(); ++i) {
      const uint16_t got = half ? FloatToHalf(v[i]) : FloatToBFloat16(v[i]);
      ASSERT_EQ(got, static_cast<uint16_t>(e[i]))
          << (half ? "half " : "bf16 ") << std::setprecision(9) << v[i];
    }
  }
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::nanf("")))));
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(std::nanf("")))));
}

}  // namespace
}  // namespace reid::dist
