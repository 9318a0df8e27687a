// The benchmarks' --profile: LibTorch's (legacy) profiler over one step, printed as self time per
// operator (its own time less its children's), the matrix products' share first.
#pragma once

#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace reid::bench {

inline void StartProfile() {
  torch::autograd::profiler::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(
      torch::profiler::impl::ProfilerState::CPU, /*report_input_shapes=*/false,
      /*profile_memory=*/false));
}

// "torch::autograd::CppNode<reid::model::(anonymous namespace)::AttentionFunction>" -> "backward
// of AttentionFunction" (the fused kernels' autograd nodes).
inline std::string ShortName(const std::string& name) {
  const std::string node = "torch::autograd::CppNode<";
  if (name.rfind(node, 0) != 0) return name;
  std::string inner = name.substr(node.size(), name.size() - node.size() - 1);
  return "backward of " + inner.substr(inner.rfind("::") + 2);
}

// Stops the profiler StartProfile started and prints, against a step of step_s seconds, the self
// time per operator name over all recorded threads (the 30 largest).
inline void PrintProfile(double step_s) {
  const auto lists = torch::autograd::profiler::disableProfilerLegacy();
  using torch::autograd::profiler::EventKind;
  std::map<std::string, std::pair<double, int>> self;  // name -> (us, calls)
  for (const auto& list : lists) {
    struct Open {
      const torch::autograd::profiler::LegacyEvent* e;
      double children_us;
    };
    std::vector<Open> stack;
    for (const auto& e : list) {
      if (e.kind() == EventKind::PushRange) {
        stack.push_back({&e, 0});
      } else if (e.kind() == EventKind::PopRange && !stack.empty()) {
        const Open o = stack.back();
        stack.pop_back();
        const double us = o.e->cpuElapsedUs(e);
        auto& entry = self[ShortName(o.e->name())];
        entry.first += us - o.children_us;
        entry.second += 1;
        if (!stack.empty()) stack.back().children_us += us;
      }
    }
  }
  std::vector<std::pair<double, std::string>> rows;
  double total_us = 0;
  for (const auto& [name, v] : self) {
    rows.emplace_back(v.first, name);
    total_us += v.first;
  }
  std::sort(rows.rbegin(), rows.rend());
  double products_us = 0;  // LibTorch's matrix products (the fused attention's are its own rows)
  for (const auto& [us, name] : rows) {
    if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" ||
        name.find("convolution") != std::string::npos) {
      products_us += us;
    }
  }
  std::printf("step %.3f s; operators' self time %.3f s (the rest: outside any operator)\n", step_s,
              total_us / 1e6);
  std::printf("matrix products (mm, addmm, bmm, convolution): %.3f s (%.1f%%)\n", products_us / 1e6,
              100 * products_us / (step_s * 1e6));
  std::printf("%-48s %9s %6s %6s\n", "operator", "self ms", "share", "calls");
  for (size_t i = 0; i < rows.size() && i < 30; ++i) {
    std::printf("%-48s %9.1f %5.1f%% %6d\n", rows[i].second.c_str(), rows[i].first / 1e3,
                100 * rows[i].first / (step_s * 1e6), self[rows[i].second].second);
  }
}

}  // namespace reid::bench
