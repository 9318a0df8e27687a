// GradSync in one process: buckets, no-sync accumulation, launches from the backward hooks and the
// frozen parameters left out (tests/dist_grad_sync_test.cc averages across ranks).
#include "trainer/distributed/grad_sync.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "base/status_test_util.h"
#include "trainer/distributed/comm.h"
#include "trainer/distributed/test_util.h"

namespace reid::dist {
namespace {

TEST(GradSyncTest, OneRankKeepsGradientsAndAccumulates) {
  torch::manual_seed(1);
  torch::nn::Sequential net(torch::nn::Linear(6, 32), torch::nn::ReLU(), torch::nn::Linear(32, 4));
  Communicator comm(MakeLocalComm());
  NamedTensors params;
  for (const auto& p : net->named_parameters()) params.emplace_back(p.key(), p.value());
  GradSyncOptions options;
  options.first_bucket_mb = 100.0 / (1 << 20);  // tiny buckets: several of them
  options.bucket_cap_mb = 300.0 / (1 << 20);
  StatusOr<std::unique_ptr<GradSync>> created = GradSync::Create(comm, params, {}, options);
  ASSERT_OK(created);
  GradSync& sync = **created;
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

// Options that were not built from a config (zero bucket sizes) are refused, not bucketed.
TEST(GradSyncTest, OptionsWithoutSizesAreRefused) {
  torch::nn::Linear a(3, 3);
  Communicator comm(MakeLocalComm());
  NamedTensors params = {{"a.weight", a->weight}};
  StatusOr<std::unique_ptr<GradSync>> sync = GradSync::Create(comm, params, {}, GradSyncOptions());
  ASSERT_FALSE(sync.ok());
  EXPECT_NE(sync.status().message().find("FromConfig"), std::string::npos);
}

TEST(GradSyncTest, FrozenParametersAreLeftOut) {
  torch::nn::Linear a(3, 3), b(3, 3);
  b->weight.requires_grad_(false);
  Communicator comm(MakeLocalComm());
  NamedTensors params = {{"a.weight", a->weight}, {"a.bias", a->bias}, {"b.weight", b->weight}};
  StatusOr<std::unique_ptr<GradSync>> sync =
      GradSync::Create(comm, params, {}, GradSyncOptions::FromConfig(proto::DistConfig()));
  ASSERT_OK(sync);
  EXPECT_EQ((*sync)->names(), (std::vector<std::string>{"a.weight", "a.bias"}));
}

}  // namespace
}  // namespace reid::dist
