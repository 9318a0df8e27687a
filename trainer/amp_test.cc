// The loss scaler against GradScaler's rules (scale, unscale, skip on inf/NaN, back off, grow,
// state round trip) and the precision each device and config gets. The autocast region itself
// needs CUDA: scripts/gpu_check.sh trains with amp where a GPU is lent.
#include "trainer/amp.h"

#include <gtest/gtest.h>

#include <limits>

#include "base/status_test_util.h"
#include "trainer/distributed/comm.h"

namespace reid::trainer {
namespace {

dist::Communicator& LocalComm() {
  static dist::Communicator comm(dist::MakeLocalComm());
  return comm;
}

TEST(PrecisionTest, Fp32OnCpuAutocastOnCuda) {
  EXPECT_FALSE(PrecisionFor(true, proto::FLOAT16, torch::kCPU).autocast);
  EXPECT_FALSE(PrecisionFor(false, proto::FLOAT16, torch::Device(torch::kCUDA, 0)).autocast);
  Precision fp16 = PrecisionFor(true, proto::FLOAT16, torch::Device(torch::kCUDA, 0));
  EXPECT_TRUE(fp16.autocast);
  EXPECT_EQ(fp16.dtype, torch::kHalf);
  EXPECT_TRUE(fp16.loss_scaling);
  Precision bf16 = PrecisionFor(true, proto::BFLOAT16, torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(bf16.dtype, torch::kBFloat16);
  EXPECT_FALSE(bf16.loss_scaling);
  EXPECT_EQ(fp16.Describe(), "fp16 autocast with dynamic loss scaling");
  // Off on CPU: the scope is a no-op there.
  AutocastScope scope(PrecisionFor(true, proto::FLOAT16, torch::kCPU));
  EXPECT_EQ((torch::ones({2, 2}).matmul(torch::ones({2, 2}))).scalar_type(), torch::kFloat);
}

TEST(LossScalerTest, DisabledIsTheIdentity) {
  auto& comm = LocalComm();
  LossScaler scaler;
  torch::Tensor loss = torch::tensor(3.5);
  EXPECT_TRUE(scaler.Scale(loss).equal(loss));
  torch::Tensor w = torch::full({2}, std::numeric_limits<float>::infinity());
  w.mutable_grad() = torch::full({2}, std::numeric_limits<float>::infinity());
  EXPECT_FALSE(scaler.UnscaleAndCheck({w}, comm));  // never skips
  scaler.Update(true);
  EXPECT_EQ(scaler.scale(), 1.0);
}

TEST(LossScalerTest, ScaledBackwardThenUnscaleGivesTheUnscaledGradients) {
  auto& comm = LocalComm();
  torch::manual_seed(1);
  torch::Tensor x = torch::randn({8, 5});
  torch::Tensor w = torch::randn({5, 3}).requires_grad_(true);
  auto loss_of = [&] { return (x.matmul(w).tanh() * 0.37).sum(); };
  loss_of().backward();
  torch::Tensor expect = w.grad().clone();
  w.mutable_grad() = torch::Tensor();
  LossScaler scaler(true, LossScalerOptions());
  EXPECT_EQ(scaler.scale(), 65536.0);
  torch::Tensor scaled = scaler.Scale(loss_of());
  EXPECT_EQ(scaled.item<float>(), loss_of().item<float>() * 65536.0f);
  scaled.backward();
  EXPECT_FALSE(scaler.UnscaleAndCheck({w}, comm));
  // A power-of-two scale is exact in float32: the same bits as the unscaled backward.
  EXPECT_TRUE(w.grad().equal(expect));
}

TEST(LossScalerTest, OverflowSkipsAndBacksOffCleanStepsGrow) {
  auto& comm = LocalComm();
  LossScalerOptions o;
  o.init_scale = 1024;
  o.growth_interval = 3;
  LossScaler scaler(true, o);
  torch::Tensor w = torch::zeros({4});
  auto set_grad = [&](float v) {
    w.mutable_grad() = torch::full({4}, 1.0f);
    w.mutable_grad()[2] = v;
  };
  // GradScaler's rules, step by step: (grad value, expected skip, expected scale after update).
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    float g;
    bool skip;
    double scale_after;
    int64_t tracker_after;
  };
  const std::vector<Case> cases = {
      {1, false, 1024, 1},  {1, false, 1024, 2}, {1, false, 2048, 0},  // grows after 3 clean
      {inf, true, 1024, 0},                                            // backs off, resets
      {1, false, 1024, 1},  {nan, true, 512, 0},                       // NaN counts as overflow
      {-inf, true, 256, 0}, {1, false, 256, 1},  {1, false, 256, 2},  {1, false, 512, 0}};
  for (size_t i = 0; i < cases.size(); ++i) {
    set_grad(cases[i].g);
    const double before = scaler.scale();
    const bool skip = scaler.UnscaleAndCheck({w}, comm);
    EXPECT_EQ(skip, cases[i].skip) << "step " << i;
    if (!skip) EXPECT_EQ(w.grad()[0].item<float>(), static_cast<float>(1.0 / before));
    scaler.Update(skip);
    EXPECT_EQ(scaler.scale(), cases[i].scale_after) << "step " << i;
    EXPECT_EQ(scaler.growth_tracker(), cases[i].tracker_after) << "step " << i;
  }
}

TEST(LossScalerTest, DoesNotGrowPastFloat32) {
  LossScalerOptions o;
  o.init_scale = 3e38;  // doubling overflows float32
  o.growth_interval = 1;
  LossScaler scaler(true, o);
  scaler.Update(false);
  EXPECT_EQ(scaler.scale(), 3e38);
  EXPECT_EQ(scaler.growth_tracker(), 0);
}

TEST(LossScalerTest, StateRoundTripAndBadStateIsDataLoss) {
  LossScalerOptions o;
  o.growth_interval = 10;
  LossScaler a(true, o);
  a.Update(true);
  a.Update(false);
  a.Update(false);
  LossScaler b(true, o);
  ASSERT_OK(b.Restore(a.State(), "scaler.pt"));
  EXPECT_EQ(b.scale(), a.scale());
  EXPECT_EQ(b.growth_tracker(), 2);
  NamedTensors bad = a.State();
  bad[0].second.fill_(-1.0);
  Status s = b.Restore(bad, "x/scaler.pt");
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_NE(s.message().find("x/scaler.pt"), std::string::npos);
  EXPECT_FALSE(b.Restore({}, "scaler.pt").ok());
  bad = a.State();
  bad[1].second.fill_(10);  // not below the growth interval
  EXPECT_FALSE(b.Restore(bad, "scaler.pt").ok());
}

}  // namespace
}  // namespace reid::trainer
