// Tiny random inference models for the ONNX export tests (onnx_export_test, onnx_runtime_test).
#pragma once

#include <cstdint>

#include "base/torch_glog.h"
#include "trainer/eval/inference_model.h"
#include "trainer/model/clip.h"

namespace reid::trainer::testing {

struct TinySpec {
  int64_t height = 128, width = 64;  // input size
  int64_t stride = 16;               // 16: disjoint patches; 12: overlapping
  int64_t layers = 2, heads = 2;
  bool neck_after = false;
  int64_t cameras = 0;  // SIE when > 0
};

// A ViT of width 64, patch 16, output_dim 32 with every parameter and BN statistic random (LN and
// BN affine terms away from 1 / 0, running statistics away from 0 / 1), in eval mode.
inline InferenceModel TinyModel(const TinySpec& spec, uint64_t seed = 7) {
  torch::manual_seed(seed);
  model::VisionShape s;
  s.width = 64;
  s.layers = spec.layers;
  s.heads = spec.heads;
  s.patch = 16;
  s.stride = spec.stride;
  std::tie(s.grid_h, s.grid_w) = model::PatchGrid(spec.height, spec.width, s.patch, s.stride);
  s.output_dim = 32;
  InferenceModel m(s, spec.cameras, /*sie_coe=*/3.0, spec.neck_after);
  torch::NoGradGuard no_grad;
  for (auto& p : m->named_parameters()) {
    const std::string& name = p.key();
    torch::Tensor t = p.value();
    const bool is_norm =
        name.find("ln_") != std::string::npos || name.find("bottleneck") != std::string::npos;
    if (is_norm && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
      t.uniform_(0.5, 1.5);
    } else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) {
      t.normal_(0, 0.1);
    } else if (name == "cv_embed") {
      t.normal_(0, 0.1);
    }
  }
  for (torch::nn::BatchNorm1d bn : {m->bottleneck, m->bottleneck_proj}) {
    bn->running_mean.normal_(0, 0.2);
    bn->running_var.uniform_(0.3, 2.0);
  }
  m->eval();
  return m;
}

// Normalised-looking random images (n, 3, height, width).
inline torch::Tensor TinyImages(const TinySpec& spec, int64_t n) {
  return torch::randn({n, 3, spec.height, spec.width});
}

}  // namespace reid::trainer::testing
