// Both stages' learning rates against the reference schedulers' formulas
// (testdata/make_schedule_fixtures.py), and the stage-2 parameter groups.
#include "trainer/schedule.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace reid::trainer {
namespace {

struct Row {
  std::string schedule;
  int epoch;
  double lr;
};

std::vector<Row> ReadRows() {
  std::ifstream in("trainer/testdata/schedule_fixtures.txt");
  std::vector<Row> rows;
  Row r;
  while (in >> r.schedule >> r.epoch >> r.lr) rows.push_back(r);
  return rows;
}

TEST(ScheduleTest, ReproducesTheReferenceTables) {
  proto::Stage1Config vit1;  // schema defaults = CLIP-ReID's ViT-B-16 values
  proto::Stage1Config tiny1;
  tiny1.set_base_lr(1e-3);
  tiny1.set_warmup_epochs(2);
  tiny1.set_max_epochs(20);
  proto::Stage2Config vit2;
  vit2.add_steps(30);
  vit2.add_steps(50);
  proto::Stage2Config constant2;
  constant2.set_base_lr(3e-4);
  constant2.set_warmup_method(proto::Stage2Config::CONSTANT);
  constant2.set_warmup_epochs(2);
  constant2.add_steps(12);
  const std::vector<Row> rows = ReadRows();
  ASSERT_EQ(rows.size(), 120u + 20u + 120u + 15u) << "trainer/testdata/schedule_fixtures.txt";
  for (const Row& r : rows) {
    double got = 0;
    if (r.schedule == "stage1_vitb16") got = Stage1LearningRate(vit1, r.epoch);
    if (r.schedule == "stage1_tiny") got = Stage1LearningRate(tiny1, r.epoch);
    if (r.schedule == "stage2_vitb16") got = vit2.base_lr() * Stage2LrFactor(vit2, r.epoch);
    if (r.schedule == "stage2_vitb16_bias") {
      got = vit2.base_lr() * vit2.bias_lr_factor() * Stage2LrFactor(vit2, r.epoch);
    }
    if (r.schedule == "stage2_constant")
      got = constant2.base_lr() * Stage2LrFactor(constant2, r.epoch);
    EXPECT_NEAR(got, r.lr, 1e-9 * std::max(1e-6, r.lr)) << r.schedule << " epoch " << r.epoch;
  }
  // The rounded values of docs/design.md 7.1 and 7.2.
  EXPECT_NEAR(Stage1LearningRate(vit1, 5), 3.4851e-4, 1e-8);
  EXPECT_NEAR(Stage1LearningRate(vit1, 120), 1e-6, 1e-15);
  EXPECT_NEAR(vit2.base_lr() * Stage2LrFactor(vit2, 1), 9.5e-7, 1e-15);
}

TEST(ScheduleTest, Stage2GroupsGiveBiasesTheirOwnLrAndDecay) {
  proto::Stage2Config cfg;
  cfg.set_weight_decay_bias(0.5);
  std::vector<std::pair<std::string, torch::Tensor>> params = {
      {"image_encoder.conv1.weight", torch::zeros({2})},
      {"image_encoder.ln_pre.bias", torch::zeros({2})},
      {"classifier.weight", torch::zeros({2})}};
  auto groups = Stage2ParamGroups(cfg, params);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 2u);
  EXPECT_DOUBLE_EQ(groups[0].lr, 5e-6);
  EXPECT_DOUBLE_EQ(groups[1].lr, 1e-5);
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.5);
  auto opt = MakeOptimizer(proto::ADAM, 0.9, groups);
  SetLearningRates(*opt, {groups[0].lr, groups[1].lr}, 0.1);
  EXPECT_DOUBLE_EQ(opt->param_groups()[1].options().get_lr(), 1e-6);
}

}  // namespace
}  // namespace reid::trainer
