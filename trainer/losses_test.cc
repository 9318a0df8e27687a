// The losses against the test vectors of docs/design.md 6.3 and against values
// of the reference definitions on random PK batches (testdata/make_loss_fixtures.py).
#include "trainer/losses.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace reid::trainer {
namespace {

torch::Tensor T(std::vector<std::vector<double>> rows) {
  std::vector<torch::Tensor> r;
  for (auto& v : rows) r.push_back(torch::tensor(v, torch::kFloat64));
  return torch::stack(r);
}

TEST(LossesTest, ReferenceTestVectors) {
  torch::Tensor feats = T({{0, 0}, {1, 0}, {0.5, 0.5}, {1, 1}});
  torch::Tensor y = torch::tensor({0, 0, 1, 1}, torch::kLong);
  const TripletOptions hard = TripletOptions::FromConfig(proto::LossConfig());  // margin 0.3
  EXPECT_NEAR(TripletLoss(feats, y, hard).item<double>(), 0.373223, 1e-6);
  TripletOptions soft = hard;
  soft.soft = true;
  EXPECT_NEAR(TripletLoss(feats, y, soft).item<double>(), 0.737773, 1e-6);
  EXPECT_NEAR(
      CrossEntropyLabelSmooth(T({{2, 1, 0}, {0, 0, 3}}), torch::tensor({0, 2}), 0.1).item<double>(),
      0.4012644, 1e-7);
  torch::Tensor a = T({{1, 0}, {0, 1}, {1, 1}}), b = T({{1, 0}, {0, 1}, {0.5, 0.5}});
  torch::Tensor l = torch::tensor({0, 1, 0}, torch::kLong);
  EXPECT_NEAR(SupConLoss(a, b, l, l, 1.0).item<double>(), 0.9030506, 1e-7);
  EXPECT_NEAR(SupConLoss(b, a, l, l, 1.0).item<double>(), 0.9227888, 1e-7);
}

// case -> name -> tensor, from testdata/loss_fixtures.txt.
std::map<std::string, std::map<std::string, torch::Tensor>> ReadFixtures() {
  std::ifstream in("trainer/testdata/loss_fixtures.txt");
  std::map<std::string, std::map<std::string, torch::Tensor>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::string c, name, shape;
    s >> c >> name >> shape;
    const int64_t rows = std::stoll(shape.substr(0, shape.find('x')));
    const int64_t cols = std::stoll(shape.substr(shape.find('x') + 1));
    std::vector<double> v(rows * cols);
    for (double& x : v) s >> x;
    out[c][name] = torch::tensor(v, torch::kFloat64).reshape({rows, cols});
  }
  return out;
}

TEST(LossesTest, MatchReferenceDefinitionsOnRandomBatches) {
  const auto fixtures = ReadFixtures();
  ASSERT_EQ(fixtures.size(), 3u) << "trainer/testdata/loss_fixtures.txt missing or incomplete";
  for (const auto& [c, f] : fixtures) {
    SCOPED_TRACE(c);
    const torch::Tensor y = f.at("labels").reshape(-1).to(torch::kLong);
    const torch::Tensor a = f.at("a"), b = f.at("b"), logits = f.at("logits");
    auto expect = [&](const char* name, const torch::Tensor& got) {
      EXPECT_NEAR(got.item<double>(), f.at(name).item<double>(), 1e-10) << name;
    };
    expect("supcon_ab", SupConLoss(a, b, y, y, 1.0));
    expect("supcon_ba_t05", SupConLoss(b, a, y, y, 0.5));
    expect("ce_ls", CrossEntropyLabelSmooth(logits, y, 0.1));
    expect("ce_ls_eps0", CrossEntropyLabelSmooth(logits, y, 0.0));
    TripletOptions o;  // make_loss_fixtures.py's margin, a double (loss.triplet_margin is a float)
    o.margin = 0.3;
    expect("triplet", TripletLoss(a, y, o));
    o.normalize = true;
    expect("triplet_norm", TripletLoss(a, y, o));
    o.normalize = false;
    o.soft = true;
    expect("triplet_soft", TripletLoss(a, y, o));
  }
}

TEST(LossesTest, Stage2LossWeightsTheComponents) {
  proto::LossConfig cfg;
  torch::manual_seed(3);
  torch::Tensor y = torch::tensor({0, 0, 1, 1, 2, 2}, torch::kLong);
  torch::Tensor s = torch::randn({6, 3}), sp = torch::randn({6, 3}), lg = torch::randn({6, 3});
  torch::Tensor f1 = torch::randn({6, 5}), f2 = torch::randn({6, 5}), f3 = torch::randn({6, 4});
  Stage2Losses l = Stage2Loss(cfg, s, sp, f1, f2, f3, lg, y);
  const double id =
      0.25 *
      (CrossEntropyLabelSmooth(s, y, 0.1) + CrossEntropyLabelSmooth(sp, y, 0.1)).item<double>();
  TripletOptions o = TripletOptions::FromConfig(proto::LossConfig());
  const double tri =
      (TripletLoss(f1, y, o) + TripletLoss(f2, y, o) + TripletLoss(f3, y, o)).item<double>();
  EXPECT_NEAR(l.id.item<double>(), id, 1e-6);
  EXPECT_NEAR(l.tri.item<double>(), tri, 1e-6);
  EXPECT_NEAR(l.i2t.item<double>(), CrossEntropyLabelSmooth(lg, y, 0.1).item<double>(), 1e-6);
  EXPECT_NEAR(l.total.item<double>(), id + tri + l.i2t.item<double>(), 1e-5);
}

// The reported names and Stage2LossParts come from one table: each name labels the component it
// says. With one weight on at a time, only the value of that component's name is non-zero.
TEST(LossesTest, ReportedNamesLabelTheirComponents) {
  torch::manual_seed(5);
  torch::Tensor y = torch::tensor({0, 0, 1, 1, 2, 2}, torch::kLong);
  torch::Tensor s = torch::randn({6, 3}), sp = torch::randn({6, 3}), lg = torch::randn({6, 3});
  torch::Tensor f1 = torch::randn({6, 5}), f2 = torch::randn({6, 5}), f3 = torch::randn({6, 4});
  const std::map<std::string, void (proto::LossConfig::*)(float)> weights = {
      {"id", &proto::LossConfig::set_id_weight},
      {"triplet", &proto::LossConfig::set_triplet_weight},
      {"i2t", &proto::LossConfig::set_i2t_weight}};
  const std::vector<ReportedLoss>& names = ReportedLosses(2);
  ASSERT_EQ(names.size(), 4u);
  EXPECT_STREQ(names[0].metric, "total");
  EXPECT_EQ(names[0].value, 0);
  for (const auto& [name, set_weight] : weights) {
    SCOPED_TRACE(name);
    proto::LossConfig cfg;
    cfg.set_id_weight(0);
    cfg.set_triplet_weight(0);
    cfg.set_i2t_weight(0);
    (cfg.*set_weight)(1.0f);
    const Stage2Losses l = Stage2Loss(cfg, s, sp, f1, f2, f3, lg, y);
    const std::vector<torch::Tensor> parts = Stage2LossParts(l);
    ASSERT_EQ(parts.size() + 1, names.size());  // the total, then one value per part
    int labelled = 0;
    for (const ReportedLoss& r : names) {
      if (r.value == 0) continue;
      ASSERT_GE(r.value, 1);
      ASSERT_LE(static_cast<size_t>(r.value), parts.size());
      const double v = parts[r.value - 1].item<double>();
      if (name == r.metric) {
        EXPECT_GT(v, 0) << r.metric;
        ++labelled;
      } else {
        EXPECT_EQ(v, 0) << r.metric;
      }
    }
    EXPECT_EQ(labelled, 1);
  }
  // The progress line shows each value once, in value order; stage 1 shows its total.
  auto strings = [](const std::vector<const char*>& labels) {
    return std::vector<std::string>(labels.begin(), labels.end());
  };
  EXPECT_EQ(strings(ProgressLossLabels(2)), (std::vector<std::string>{"loss", "id", "tri", "i2t"}));
  EXPECT_EQ(strings(ProgressLossLabels(1)), std::vector<std::string>{"loss"});
  for (const ReportedLoss& r : ReportedLosses(1)) EXPECT_EQ(r.value, 0) << r.metric;
}

TEST(LossesTest, TripletWithoutNegativesIsZeroAndDifferentiable) {
  torch::Tensor f = torch::randn({4, 3}, torch::requires_grad());
  torch::Tensor loss = TripletLoss(f, torch::zeros({4}, torch::kLong),
                                   TripletOptions::FromConfig(proto::LossConfig()));
  EXPECT_EQ(loss.item<double>(), 0.0);
  loss.backward();
  EXPECT_TRUE(f.grad().defined());
}

}  // namespace
}  // namespace reid::trainer
