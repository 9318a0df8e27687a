// timm CosineLRScheduler and CLIP-ReID's WarmupMultiStepLR, per epoch; optimiser construction.
#include "trainer/schedule.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "trainer/fused_adam.h"

namespace reid::trainer {

double Stage1LearningRate(const proto::Stage1Config& cfg, int epoch) {
  const double t = epoch;
  const double warmup_t = cfg.warmup_epochs();
  if (t < warmup_t) {
    const double step = (cfg.base_lr() - cfg.warmup_lr_init()) / warmup_t;
    return cfg.warmup_lr_init() + t * step;
  }
  const double t_initial = cfg.max_epochs();
  // cycle_limit 1, cycle_mul 1: cycle i = floor(t / t_initial); past the first cycle, lr_min.
  const double i = std::floor(t / t_initial);
  if (i >= 1) return cfg.lr_min();
  const double t_curr = t - t_initial * i;
  return cfg.lr_min() +
         0.5 * (cfg.base_lr() - cfg.lr_min()) * (1.0 + std::cos(M_PI * t_curr / t_initial));
}

double Stage2LrFactor(const proto::Stage2Config& cfg, int epoch) {
  double warmup = 1.0;
  if (epoch < cfg.warmup_epochs()) {
    if (cfg.warmup_method() == proto::Stage2Config::CONSTANT) {
      warmup = cfg.warmup_factor();
    } else {
      const double alpha = static_cast<double>(epoch) / cfg.warmup_epochs();
      warmup = cfg.warmup_factor() * (1.0 - alpha) + alpha;
    }
  }
  int passed = 0;  // bisect_right(milestones, epoch)
  for (int m : cfg.steps()) passed += (m <= epoch) ? 1 : 0;
  return warmup * std::pow(cfg.gamma(), passed);
}

std::vector<ParamGroup> Stage2ParamGroups(
    const proto::Stage2Config& cfg,
    const std::vector<std::pair<std::string, torch::Tensor>>& trainable) {
  ParamGroup plain, bias;
  plain.lr = cfg.base_lr();
  plain.weight_decay = cfg.weight_decay();
  bias.lr = cfg.base_lr() * cfg.bias_lr_factor();
  bias.weight_decay = cfg.weight_decay_bias();
  for (const auto& [name, p] : trainable) {
    ParamGroup& g = name.find("bias") != std::string::npos ? bias : plain;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  std::vector<ParamGroup> groups;
  for (ParamGroup* g : {&plain, &bias}) {
    if (!g->params.empty()) groups.push_back(std::move(*g));
  }
  return groups;
}

namespace {

// One optimiser of type Opt over `groups`; `options(lr, weight_decay)` makes a group's options.
template <typename Opt, typename MakeOptions>
std::unique_ptr<torch::optim::Optimizer> Build(const std::vector<ParamGroup>& groups,
                                               MakeOptions options) {
  std::vector<torch::optim::OptimizerParamGroup> pg;
  for (const ParamGroup& g : groups) {
    pg.emplace_back(g.params,
                    std::make_unique<decltype(options(0.0, 0.0))>(options(g.lr, g.weight_decay)));
  }
  return std::make_unique<Opt>(pg, options(groups[0].lr, groups[0].weight_decay));
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(proto::OptimizerType type, double momentum,
                                                       const std::vector<ParamGroup>& groups) {
  CHECK(!groups.empty()) << "no trainable parameters";
  using namespace torch::optim;  // NOLINT: the option types below
  switch (type) {
    case proto::ADAMW:
      return Build<AdamW>(groups,
                          [](double lr, double wd) { return AdamWOptions(lr).weight_decay(wd); });
    case proto::SGD:
      return Build<SGD>(groups, [momentum](double lr, double wd) {
        return SGDOptions(lr).momentum(momentum).weight_decay(wd);
      });
    default:  // ADAM: torch.optim.Adam, L2 weight decay coupled into the gradient
      return Build<FusedAdam>(
          groups, [](double lr, double wd) { return AdamOptions(lr).weight_decay(wd); });
  }
}

void SetLearningRates(torch::optim::Optimizer& opt, const std::vector<double>& base_lrs,
                      double factor) {
  auto& groups = opt.param_groups();
  CHECK_EQ(groups.size(), base_lrs.size());
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(base_lrs[i] * factor);
}

double CurrentLearningRate(torch::optim::Optimizer& opt) {
  return opt.param_groups().at(0).options().get_lr();
}

}  // namespace reid::trainer
