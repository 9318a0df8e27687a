// Optimiser state <-> named tensors. LibTorch keys an optimiser's state by the address of each
// parameter's TensorImpl (as text); the names here make the file independent of addresses.
#include "trainer/optimizer_state.h"

#include <c10/util/string_utils.h>

#include <map>
#include <memory>
#include <set>
#include <sstream>

namespace reid::trainer {
namespace {

using torch::optim::Adam;
using torch::optim::AdamOptions;
using torch::optim::AdamParamState;
using torch::optim::AdamW;
using torch::optim::AdamWOptions;
using torch::optim::AdamWParamState;
using torch::optim::OptimizerParamState;
using torch::optim::SGD;
using torch::optim::SGDOptions;
using torch::optim::SGDParamState;

enum class Kind { kAdam, kAdamW, kSgd, kOther };

Kind KindOf(const torch::optim::Optimizer& opt) {
  if (dynamic_cast<const Adam*>(&opt) != nullptr) return Kind::kAdam;
  if (dynamic_cast<const AdamW*>(&opt) != nullptr) return Kind::kAdamW;
  if (dynamic_cast<const SGD*>(&opt) != nullptr) return Kind::kSgd;
  return Kind::kOther;
}

// The key of a parameter in Optimizer::state(), as LibTorch's optimisers compute it.
std::string StateKey(const torch::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}

std::map<const void*, std::string> NamesByImpl(const NamedTensors& named_params) {
  std::map<const void*, std::string> names;
  for (const auto& [name, p] : named_params) names.emplace(p.unsafeGetTensorImpl(), name);
  return names;
}

bool AmsGrad(const torch::optim::OptimizerParamGroup& group, Kind kind) {
  if (kind == Kind::kAdam) return static_cast<const AdamOptions&>(group.options()).amsgrad();
  if (kind == Kind::kAdamW) return static_cast<const AdamWOptions&>(group.options()).amsgrad();
  return false;
}

// Fields of one parameter's state, as saved.
struct Fields {
  int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq, max_exp_avg_sq, momentum_buffer;
};

template <typename State>
Fields AdamFields(const OptimizerParamState& base) {
  const auto& s = static_cast<const State&>(base);
  return {s.step(), s.exp_avg(), s.exp_avg_sq(), s.max_exp_avg_sq(), {}};
}

template <typename State>
std::unique_ptr<OptimizerParamState> MakeAdamState(const Fields& f) {
  auto s = std::make_unique<State>();
  s->step(f.step);
  s->exp_avg(f.exp_avg);
  s->exp_avg_sq(f.exp_avg_sq);
  if (f.max_exp_avg_sq.defined()) s->max_exp_avg_sq(f.max_exp_avg_sq);
  return s;
}

}  // namespace

StatusOr<NamedTensors> OptimizerStateTensors(const torch::optim::Optimizer& opt,
                                             const NamedTensors& named_params) {
  const Kind kind = KindOf(opt);
  if (kind == Kind::kOther) return Status::Internal("optimizer state: not Adam, AdamW or SGD");
  const std::map<const void*, std::string> names = NamesByImpl(named_params);
  NamedTensors out;
  const auto& groups = opt.param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    for (const torch::Tensor& p : groups[g].params()) {
      auto name = names.find(p.unsafeGetTensorImpl());
      if (name == names.end())
        return Status::Internal("optimizer state: a parameter of group " + std::to_string(g) +
                                " is not among the model's named parameters");
      auto it = opt.state().find(StateKey(p));
      if (it == opt.state().end()) continue;  // never stepped
      const std::string prefix = "group" + std::to_string(g) + "/" + name->second + "/";
      auto put = [&](const char* field, const torch::Tensor& t) {
        if (t.defined()) out.emplace_back(prefix + field, t.detach());
      };
      if (kind == Kind::kSgd) {
        put("momentum_buffer", static_cast<const SGDParamState&>(*it->second).momentum_buffer());
        continue;
      }
      const Fields f = kind == Kind::kAdam ? AdamFields<AdamParamState>(*it->second)
                                           : AdamFields<AdamWParamState>(*it->second);
      out.emplace_back(prefix + "step", torch::scalar_tensor(f.step, torch::kInt64));
      put("exp_avg", f.exp_avg);
      put("exp_avg_sq", f.exp_avg_sq);
      put("max_exp_avg_sq", f.max_exp_avg_sq);
    }
  }
  return out;
}

Status RestoreOptimizerState(torch::optim::Optimizer* opt, const NamedTensors& named_params,
                             const NamedTensors& state, const std::string& what) {
  const Kind kind = KindOf(*opt);
  if (kind == Kind::kOther) return Status::Internal("optimizer state: not Adam, AdamW or SGD");
  auto fail = [&what](const std::string& entry, const std::string& why) {
    return Status::DataLoss(what + ": entry '" + entry.substr(0, 160) + "' " + why);
  };
  // Entries by (group, parameter): field -> tensor.
  std::map<std::pair<std::string, std::string>, std::map<std::string, torch::Tensor>> entries;
  for (const auto& [key, t] : state) {
    const size_t first = key.find('/'), last = key.rfind('/');
    if (first == std::string::npos || first == last)
      return fail(key, "is not group<G>/<parameter>/<field>");
    entries[{key.substr(0, first), key.substr(first + 1, last - first - 1)}].emplace(
        key.substr(last + 1), t);
  }
  const std::map<const void*, std::string> names = NamesByImpl(named_params);
  std::vector<std::pair<std::string, std::unique_ptr<OptimizerParamState>>> restored;
  size_t used = 0;
  const auto& groups = opt->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) {
    const bool amsgrad = AmsGrad(groups[g], kind);
    for (const torch::Tensor& p : groups[g].params()) {
      auto name = names.find(p.unsafeGetTensorImpl());
      if (name == names.end())
        return Status::Internal("optimizer state: a parameter of group " + std::to_string(g) +
                                " is not among the model's named parameters");
      const std::string group = "group" + std::to_string(g);
      auto it = entries.find({group, name->second});
      if (it == entries.end()) continue;  // never stepped when saved
      ++used;
      const std::string prefix = group + "/" + name->second + "/";
      std::set<std::string> expected;
      if (kind == Kind::kSgd) {
        expected = {"momentum_buffer"};
      } else {
        expected = {"step", "exp_avg", "exp_avg_sq"};
        if (amsgrad) expected.insert("max_exp_avg_sq");
      }
      Fields f;
      for (const auto& [field, t] : it->second) {
        if (!expected.count(field)) return fail(prefix + field, "is not a field of this optimizer");
        if (field == "step") {
          if (t.scalar_type() != torch::kInt64 || t.numel() != 1 || t.item<int64_t>() < 0)
            return fail(prefix + field, "is not one int64 >= 0");
          f.step = t.item<int64_t>();
          continue;
        }
        if (t.sizes() != p.sizes() || t.scalar_type() != p.scalar_type()) {
          std::ostringstream s;
          s << "has shape " << t.sizes() << " " << t.scalar_type() << ", the parameter "
            << p.sizes() << " " << p.scalar_type();
          return fail(prefix + field, s.str());
        }
        torch::NoGradGuard no_grad;
        torch::Tensor copy = torch::empty_like(p).copy_(t);
        if (field == "exp_avg") f.exp_avg = copy;
        if (field == "exp_avg_sq") f.exp_avg_sq = copy;
        if (field == "max_exp_avg_sq") f.max_exp_avg_sq = copy;
        if (field == "momentum_buffer") f.momentum_buffer = copy;
      }
      if (it->second.size() != expected.size()) {
        for (const std::string& field : expected) {
          if (!it->second.count(field)) return fail(prefix + field, "is missing");
        }
      }
      std::unique_ptr<OptimizerParamState> s;
      if (kind == Kind::kSgd) {
        auto sgd = std::make_unique<SGDParamState>();
        sgd->momentum_buffer(f.momentum_buffer);
        s = std::move(sgd);
      } else if (kind == Kind::kAdam) {
        s = MakeAdamState<AdamParamState>(f);
      } else {
        s = MakeAdamState<AdamWParamState>(f);
      }
      restored.emplace_back(StateKey(p), std::move(s));
    }
  }
  if (used != entries.size()) {
    for (const auto& [key, fields] : entries) {
      bool known = false;
      for (size_t g = 0; g < groups.size() && !known; ++g) {
        if (key.first != "group" + std::to_string(g)) continue;
        for (const torch::Tensor& p : groups[g].params()) {
          auto name = names.find(p.unsafeGetTensorImpl());
          known = known || (name != names.end() && name->second == key.second);
        }
      }
      if (!known) {
        return fail(key.first + "/" + key.second + "/" + fields.begin()->first,
                    "names no parameter of that group of this optimizer");
      }
    }
  }
  opt->state().clear();
  for (auto& [key, s] : restored) opt->state()[key] = std::move(s);
  return Status::Ok();
}

}  // namespace reid::trainer
