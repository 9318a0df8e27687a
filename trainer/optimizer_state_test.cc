// Optimiser state through a checkpoint file: Adam, AdamW (with and without amsgrad) and SGD with
// momentum, two parameter groups, saved after some steps, written as a torch.save zip, read back
// and restored into a fresh optimiser; the next steps must match an uninterrupted run bit for
// bit. Entries that do not fit the optimiser are refused with the entry named.
#include "trainer/optimizer_state.h"

#include <gtest/gtest.h>

#include <functional>

#include "base/status_test_util.h"
#include "trainer/checkpoint.h"
#include "trainer/schedule.h"

namespace reid::trainer {
namespace {

struct Model {
  NamedTensors params;
  std::vector<ParamGroup> groups;
};

// Three parameters in two groups (weights, biases), as Stage2ParamGroups makes them.
Model MakeModel() {
  torch::manual_seed(3);
  Model m;
  m.params = {{"enc.weight", torch::randn({4, 3})},
              {"enc.bias", torch::randn({4})},
              {"head.weight", torch::randn({2, 4})}};
  ParamGroup plain, bias;
  plain.lr = 0.01;
  plain.weight_decay = 1e-4;
  bias.lr = 0.02;
  bias.weight_decay = 0;
  for (auto& [name, p] : m.params) {
    p.requires_grad_(true);
    ParamGroup& g = name.find("bias") != std::string::npos ? bias : plain;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  m.groups = {plain, bias};
  return m;
}

// One step whose gradients depend on the step number only.
void Step(torch::optim::Optimizer& opt, const Model& m, int step) {
  opt.zero_grad();
  torch::Tensor loss = torch::zeros({});
  for (const auto& [name, p] : m.params) {
    torch::manual_seed(100 + step);
    loss = loss + (p * torch::randn(p.sizes())).sum() + 0.1 * (p * p).sum();
  }
  loss.backward();
  opt.step();
}

using Factory = std::function<std::unique_ptr<torch::optim::Optimizer>(const Model&)>;

void ExpectExactResume(const Factory& make) {
  // Uninterrupted: 5 steps.
  Model a = MakeModel();
  auto opt_a = make(a);
  for (int s = 0; s < 5; ++s) Step(*opt_a, a, s);
  // Interrupted after 3 steps: parameters and optimiser state through checkpoint bytes.
  Model b = MakeModel();
  auto opt_b = make(b);
  for (int s = 0; s < 3; ++s) Step(*opt_b, b, s);
  StatusOr<NamedTensors> state = OptimizerStateTensors(*opt_b, b.params);
  ASSERT_OK(state);
  ASSERT_FALSE(state->empty());
  StatusOr<std::string> bytes = SerializeTensors(*state);
  ASSERT_OK(bytes);
  StatusOr<NamedTensors> read = DeserializeTensors(*bytes, "optimizer.pt");
  ASSERT_OK(read);
  Model c = MakeModel();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < c.params.size(); ++i) c.params[i].second.copy_(b.params[i].second);
  }
  auto opt_c = make(c);
  Status s = RestoreOptimizerState(opt_c.get(), c.params, *read, "optimizer.pt");
  ASSERT_OK(s);
  for (int k = 3; k < 5; ++k) Step(*opt_c, c, k);
  for (size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_TRUE(torch::equal(a.params[i].second, c.params[i].second)) << a.params[i].first;
  }
  // Without the state the same steps differ (the test would notice a restore that did nothing).
  Model d = MakeModel();
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < d.params.size(); ++i) d.params[i].second.copy_(b.params[i].second);
  }
  auto opt_d = make(d);
  for (int k = 3; k < 5; ++k) Step(*opt_d, d, k);
  EXPECT_FALSE(torch::equal(a.params[0].second, d.params[0].second));
}

std::vector<torch::optim::OptimizerParamGroup> Groups(const Model& m) {
  std::vector<torch::optim::OptimizerParamGroup> out;
  for (const ParamGroup& g : m.groups) out.emplace_back(g.params);
  return out;
}

TEST(OptimizerStateTest, AdamResumesExactly) {
  ExpectExactResume([](const Model& m) { return MakeOptimizer(proto::ADAM, 0, m.groups); });
}

TEST(OptimizerStateTest, AdamWResumesExactly) {
  ExpectExactResume([](const Model& m) { return MakeOptimizer(proto::ADAMW, 0, m.groups); });
}

TEST(OptimizerStateTest, SgdWithMomentumResumesExactly) {
  ExpectExactResume([](const Model& m) { return MakeOptimizer(proto::SGD, 0.9, m.groups); });
}

TEST(OptimizerStateTest, AmsGradResumesExactly) {
  ExpectExactResume([](const Model& m) {
    return std::make_unique<torch::optim::Adam>(
        Groups(m), torch::optim::AdamOptions(0.01).amsgrad(true).weight_decay(1e-3));
  });
  ExpectExactResume([](const Model& m) {
    return std::make_unique<torch::optim::AdamW>(Groups(m),
                                                 torch::optim::AdamWOptions(0.01).amsgrad(true));
  });
}

TEST(OptimizerStateTest, NamesEveryFieldByGroupAndParameter) {
  Model m = MakeModel();
  auto opt = MakeOptimizer(proto::ADAM, 0, m.groups);
  Step(*opt, m, 0);
  StatusOr<NamedTensors> state = OptimizerStateTensors(*opt, m.params);
  ASSERT_OK(state);
  std::vector<std::string> names;
  for (const auto& [name, t] : *state) names.push_back(name);
  EXPECT_EQ(
      names,
      (std::vector<std::string>{
          "group0/enc.weight/step", "group0/enc.weight/exp_avg", "group0/enc.weight/exp_avg_sq",
          "group0/head.weight/step", "group0/head.weight/exp_avg", "group0/head.weight/exp_avg_sq",
          "group1/enc.bias/step", "group1/enc.bias/exp_avg", "group1/enc.bias/exp_avg_sq"}));
  EXPECT_EQ(state->at(0).second.item<int64_t>(), 1);
  // A fresh optimiser has no state and writes no entries.
  auto fresh = MakeOptimizer(proto::SGD, 0.9, m.groups);
  EXPECT_TRUE(OptimizerStateTensors(*fresh, m.params)->empty());
}

TEST(OptimizerStateTest, RefusesEntriesThatDoNotFit) {
  Model m = MakeModel();
  auto opt = MakeOptimizer(proto::ADAM, 0, m.groups);
  Step(*opt, m, 0);
  const NamedTensors good = *OptimizerStateTensors(*opt, m.params);
  auto with = [&](const std::function<void(NamedTensors*)>& edit) {
    NamedTensors t = good;
    edit(&t);
    auto target = MakeOptimizer(proto::ADAM, 0, m.groups);
    Status s = RestoreOptimizerState(target.get(), m.params, t, "x/optimizer.pt");
    EXPECT_TRUE(target->state().empty()) << "changed on error";
    return s;
  };
  auto expect = [](const Status& s, const std::string& part) {
    EXPECT_EQ(s.code(), Status::Code::kDataLoss) << s.message();
    EXPECT_NE(s.message().find(part), std::string::npos) << s.message();
    EXPECT_EQ(s.message().rfind("x/optimizer.pt: entry '", 0), 0u) << s.message();
  };
  expect(with([](NamedTensors* t) {
           t->at(1).second = torch::zeros({3, 4});
         }),
         "'group0/enc.weight/exp_avg' has shape [3, 4]");
  expect(with([](NamedTensors* t) { t->at(1).second = t->at(1).second.to(torch::kDouble); }),
         "Double, the parameter [4, 3] Float");
  expect(with([](NamedTensors* t) { t->erase(t->begin() + 2); }),
         "'group0/enc.weight/exp_avg_sq' is missing");
  expect(with([](NamedTensors* t) { t->emplace_back("group1/enc.weight/step", t->at(0).second); }),
         "'group1/enc.weight/step' names no parameter");
  expect(with([](NamedTensors* t) {
           t->emplace_back("group0/enc.weight/momentum_buffer", t->at(1).second);
         }),
         "is not a field of this optimizer");
  expect(with([](NamedTensors* t) { t->at(0).second = torch::scalar_tensor(-1, torch::kInt64); }),
         "is not one int64 >= 0");
  expect(with([](NamedTensors* t) { t->emplace_back("loose", t->at(0).second); }),
         "is not group<G>/<parameter>/<field>");
  auto target = MakeOptimizer(proto::ADAM, 0, m.groups);
  EXPECT_OK(RestoreOptimizerState(target.get(), m.params, good, "x"));
  EXPECT_EQ(target->state().size(), 3u);
}

}  // namespace
}  // namespace reid::trainer
