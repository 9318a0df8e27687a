// Helpers shared by the model tests: the committed fixtures of tests/clip_reference.py and
// comparisons.
#pragma once

#include <fstream>
#include <string>

#include "base/torch_glog.h"
#include "formats/npy.h"

namespace reid::model::testing {

// max |a - b| / max |b|.
inline double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-30, b.abs().max().item<double>());
}

inline torch::Tensor LoadNpyOrDie(const std::string& path) {
  StatusOr<torch::Tensor> t = formats::ReadNpy(path);
  CHECK(t.ok()) << t.status().message();
  return *t;
}

// The tiny CLIP fixtures (checkpoints in both formats, inputs, golden outputs), committed in
// trainer/model/testdata/clip_fixtures/ so that the parity tests run without Python. Written by
// `/usr/bin/python3 tests/clip_reference.py fixtures trainer/model/testdata/clip_fixtures` (torch
// 1.13); tests run from the source root. "" when the folder is missing (the caller skips).
inline const std::string& ClipFixtureDir() {
  static const std::string dir = [] {
    const std::string d = "trainer/model/testdata/clip_fixtures";
    return std::ifstream(d + "/clip_jit.pt").good() ? d : std::string();
  }();
  return dir;
}

}  // namespace reid::model::testing
