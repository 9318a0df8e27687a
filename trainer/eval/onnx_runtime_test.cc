// The exported ONNX model in ONNX Runtime (npm's onnxruntime-node through
// tests/onnx_runtime_check.js) against the LibTorch forward of the same tiny random model, at
// batch 1, 7 and 32 (one exported file: the batch is dynamic), neck before and after, disjoint and
// overlapping patches, with and without SIE: max |ort - torch| / max |torch| <= 1e-4. A negative
// control perturbs one weight in the exported bytes and must be caught. Skipped (never passed)
// when node or onnxruntime-node is missing; scripts/install-onnxruntime.sh installs the latter.
// Runs from the source root (ctest's working directory); REID_ORT_DIR overrides build-tools/ort.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/status_test_util.h"
#include "trainer/eval/onnx_export.h"
#include "trainer/eval/onnx_test_util.h"
#include "formats/npy.h"
#include "trainer/model/test_util.h"

namespace reid::trainer {
namespace {

namespace fs = std::filesystem;
using testing::TinyImages;
using testing::TinyModel;
using testing::TinySpec;

constexpr double kTolerance = 1e-4;
constexpr int kSkip = 77;  // tests/onnx_runtime_check.js: onnxruntime-node cannot be loaded

std::string Quote(const std::string& s) { return "'" + s + "'"; }  // our paths have no quotes

// Runs `cmd` through the shell; returns its exit status and appends its output to `out`.
int RunShell(const std::string& cmd, std::string* out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out->append(buf.data(), n);
  const int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

class OnnxRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string out;
    if (RunShell("command -v node", &out) != 0) GTEST_SKIP() << "node is not installed";
    const char* env = std::getenv("REID_ORT_DIR");
    ort_dir_ = env != nullptr ? env : "build-tools/ort";
    if (!fs::exists(fs::path(ort_dir_) / "node_modules/onnxruntime-node/package.json")) {
      GTEST_SKIP() << "onnxruntime-node is not installed in " << ort_dir_
                   << " (run scripts/install-onnxruntime.sh)";
    }
    ASSERT_TRUE(fs::exists("tests/onnx_runtime_check.js")) << "run from the source root";
    char tmpl[] = "/tmp/reid_onnx_rt_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // ONNX Runtime's features for `images` (and `cams` when defined) from the model file `onnx`;
  // undefined after a GTEST_SKIP or a failure (recorded).
  torch::Tensor RunOrt(const std::string& onnx, const torch::Tensor& images,
                       const torch::Tensor& cams, const std::string& tag) {
    const std::string in = dir_ + "/" + tag + "_images.npy";
    const std::string cams_path = dir_ + "/" + tag + "_camids.npy";
    const std::string out_path = dir_ + "/" + tag + "_features.npy";
    Status st = formats::WriteNpy(in, images);
    EXPECT_OK(st);
    std::string cmd = "node tests/onnx_runtime_check.js --ort-dir " + Quote(ort_dir_) + " " +
                      Quote(onnx) + " " + Quote(in) + " " + Quote(out_path);
    if (cams.defined()) {
      st = formats::WriteNpy(cams_path, cams);
      EXPECT_OK(st);
      cmd += " " + Quote(cams_path);
    }
    std::string out;
    const int rc = RunShell(cmd, &out);
    if (rc == kSkip) {
      skipped_ = out;
      return {};
    }
    EXPECT_EQ(rc, 0) << cmd << "\n" << out;
    if (rc != 0) return {};
    std::printf("  %s", out.c_str());
    StatusOr<torch::Tensor> got = formats::ReadNpy(out_path);
    EXPECT_OK(got);
    return got.ok() ? *got : torch::Tensor();
  }

  // Exports `spec`'s model and compares ONNX Runtime with LibTorch at batch 1, 7 and 32.
  void Compare(const std::string& name, const TinySpec& spec) {
    InferenceModel model = TinyModel(spec);
    OnnxExportInfo info;
    info.height = spec.height;
    info.width = spec.width;
    info.producer_version = "test";
    StatusOr<std::string> bytes = ExportOnnx(model, info);
    ASSERT_OK(bytes);
    const std::string onnx = dir_ + "/" + name + ".onnx";
    std::ofstream(onnx, std::ios::binary) << *bytes;
    for (int64_t batch : {1, 7, 32}) {
      torch::manual_seed(100 + batch);
      const torch::Tensor images = TinyImages(spec, batch);
      torch::Tensor cams;
      if (spec.cameras > 0) cams = torch::randint(spec.cameras, {batch}, torch::kLong);
      torch::Tensor want;
      {
        torch::NoGradGuard no_grad;
        want = model->forward(images, cams);
      }
      const torch::Tensor got = RunOrt(onnx, images, cams, name + "_b" + std::to_string(batch));
      if (!skipped_.empty()) GTEST_SKIP() << skipped_;
      ASSERT_TRUE(got.defined());
      ASSERT_EQ(got.sizes(), want.sizes());
      const double rel = model::testing::RelativeError(got, want);
      std::printf("  %s batch %ld: max relative difference %.3g (ONNX Runtime vs LibTorch)\n",
                  name.c_str(), static_cast<long>(batch), rel);
      EXPECT_LE(rel, kTolerance) << name << " batch " << batch;
    }
  }

  std::string ort_dir_, dir_, skipped_;
};

TEST_F(OnnxRuntimeTest, NeckBeforeDisjointPatches) {
  Compare("before_s16", {128, 64, 16, 2, 2, /*neck_after=*/false, /*cameras=*/0});
}

TEST_F(OnnxRuntimeTest, NeckAfterOverlappingPatches) {
  Compare("after_s12", {128, 64, 12, 2, 2, /*neck_after=*/true, /*cameras=*/0});
}

TEST_F(OnnxRuntimeTest, SieNeckBefore) {
  Compare("sie_before_s16", {128, 64, 16, 2, 2, /*neck_after=*/false, /*cameras=*/5});
}

TEST_F(OnnxRuntimeTest, SieNeckAfterOverlappingPatches) {
  Compare("sie_after_s12", {128, 64, 12, 2, 2, /*neck_after=*/true, /*cameras=*/4});
}

// Negative control: one weight changed in the exported file (ln_post.bias[0] += 0.05) must put
// the comparison over the tolerance, so a passing comparison means the weights were used.
TEST_F(OnnxRuntimeTest, PerturbedWeightIsCaught) {
  const TinySpec spec{128, 64, 16, 2, 2, false, 0};
  InferenceModel model = TinyModel(spec);
  OnnxExportInfo info;
  info.height = spec.height;
  info.width = spec.width;
  StatusOr<std::string> bytes = ExportOnnx(model, info);
  ASSERT_OK(bytes);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(*bytes));
  bool found = false;
  for (onnx::TensorProto& t : *proto.mutable_graph()->mutable_initializer()) {
    if (t.name() != "image_encoder.ln_post.bias") continue;
    float v;
    std::memcpy(&v, t.raw_data().data(), 4);
    v += 0.05f;
    std::string raw = t.raw_data();
    std::memcpy(raw.data(), &v, 4);
    t.set_raw_data(raw);
    found = true;
  }
  ASSERT_TRUE(found);
  const std::string onnx = dir_ + "/perturbed.onnx";
  std::ofstream(onnx, std::ios::binary) << proto.SerializeAsString();
  torch::manual_seed(3);
  const torch::Tensor images = TinyImages(spec, 7);
  torch::Tensor want;
  {
    torch::NoGradGuard no_grad;
    want = model->forward(images);
  }
  const torch::Tensor got = RunOrt(onnx, images, {}, "perturbed");
  if (!skipped_.empty()) GTEST_SKIP() << skipped_;
  ASSERT_TRUE(got.defined());
  const double rel = model::testing::RelativeError(got, want);
  std::printf("  perturbed ln_post.bias[0]: max relative difference %.3g\n", rel);
  EXPECT_GT(rel, kTolerance);
}

}  // namespace
}  // namespace reid::trainer
