// Helpers shared by the model tests: fixtures written by tests/clip_reference.py and comparisons.
#pragma once

#include <cstdlib>
#include <string>

#include "base/torch_glog.h"
#include "trainer/model/npy.h"

namespace reid::model::testing {

// max |a - b| / max |b|.
inline double RelativeError(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-30, b.abs().max().item<double>());
}

inline torch::Tensor LoadNpyOrDie(const std::string& path) {
  torch::Tensor t;
  std::string error;
  CHECK(ReadNpy(path, &t, &error)) << error;
  return t;
}

inline std::string& FixtureDirToRemove() {
  static std::string dir;
  return dir;
}

// Writes the tiny CLIP fixtures into a fresh temp dir once per process (removed at exit); "" when
// Debian's python3-torch is missing (the caller skips), CHECK-fails when the script fails.
inline const std::string& ClipFixtureDir() {
  static const std::string dir = [] {
    if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
      return std::string();
    char tmpl[] = "/tmp/reid_clip_fixtures_XXXXXX";
    CHECK(mkdtemp(tmpl) != nullptr) << "mkdtemp";
    const std::string d = tmpl;
    FixtureDirToRemove() = d;
    std::atexit([] { std::system(("rm -rf '" + FixtureDirToRemove() + "'").c_str()); });
    const std::string cmd = "/usr/bin/python3 tests/clip_reference.py fixtures " + d;
    CHECK_EQ(std::system(cmd.c_str()), 0) << "failed: " << cmd << " (run from the source root)";
    return d;
  }();
  return dir;
}

}  // namespace reid::model::testing
