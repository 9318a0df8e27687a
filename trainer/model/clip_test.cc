// Parity of the C++ CLIP with the Python reference (tests/clip_reference.py) on tiny random
// checkpoints in both formats, the ViT-B/16 parameter counts, and weight-import errors.
#include "trainer/model/clip.h"

#include <gtest/gtest.h>

#include "trainer/model/test_util.h"
#include "trainer/model/weights.h"

namespace reid::model {
namespace {

using testing::ClipFixtureDir;
using testing::LoadNpyOrDie;
using testing::RelativeError;

#define REQUIRE_FIXTURES()                                                                      \
  if (ClipFixtureDir().empty()) GTEST_SKIP() << "trainer/model/testdata/clip_fixtures missing"; \
  const std::string dir = ClipFixtureDir()

class ClipParity : public ::testing::TestWithParam<const char*> {};

TEST_P(ClipParity, EncodeImageAndTextMatchPython) {
  REQUIRE_FIXTURES();
  std::string error;
  Clip clip = LoadClip(dir + "/" + GetParam(), &error);
  ASSERT_TRUE(clip) << error;
  EXPECT_EQ(clip->shape().vision.heads, 2);
  EXPECT_EQ(clip->shape().text.vocab_size, 514);
  torch::NoGradGuard no_grad;
  auto img = clip->EncodeImage(LoadNpyOrDie(dir + "/images.npy"));
  EXPECT_LT(RelativeError(img, LoadNpyOrDie(dir + "/image_features.npy")), 1e-5);
  auto txt = clip->EncodeText(LoadNpyOrDie(dir + "/tokens.npy"));
  EXPECT_LT(RelativeError(txt, LoadNpyOrDie(dir + "/text_features.npy")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(BothFormats, ClipParity,
                         ::testing::Values("clip_jit.pt", "clip_state.pth"));

// CLIP-ReID's image side: non-square grid with the positional embedding resized, and the
// overlapping stride with SIE; all three outputs.
void CheckReidCase(const std::string& dir, const std::string& name, int64_t stride, bool sie) {
  std::string error;
  Clip clip = LoadClip(dir + "/clip_state.pth", &error);
  ASSERT_TRUE(clip) << error;
  VisionShape s = clip->visual->shape();
  s.stride = stride;
  std::tie(s.grid_h, s.grid_w) = PatchGrid(48, 32, s.patch, stride);
  VisionTransformer vis(s);
  StateDict sd = ModuleStateDict(*clip->visual);
  sd["positional_embedding"] =
      ResizePositionalEmbedding(sd["positional_embedding"], 4, 4, s.grid_h, s.grid_w);
  ASSERT_TRUE(LoadStateDict(*vis, sd, "visual", &error)) << error;
  torch::NoGradGuard no_grad;
  torch::Tensor cv = sie ? LoadNpyOrDie(dir + "/cv_" + name + ".npy") : torch::Tensor();
  VisionOutputs o = vis(LoadNpyOrDie(dir + "/images_" + name + ".npy"), cv);
  EXPECT_LT(RelativeError(o.cls_last, LoadNpyOrDie(dir + "/cls_last_" + name + ".npy")), 1e-5);
  EXPECT_LT(RelativeError(o.cls, LoadNpyOrDie(dir + "/cls_" + name + ".npy")), 1e-5);
  EXPECT_LT(RelativeError(o.cls_proj, LoadNpyOrDie(dir + "/cls_proj_" + name + ".npy")), 1e-5);
}

TEST(ClipReid, NonSquareGridMatchesPython) {
  REQUIRE_FIXTURES();
  CheckReidCase(dir, "48x32", 8, false);
}

TEST(ClipReid, OverlappingStrideWithSieMatchesPython) {
  REQUIRE_FIXTURES();
  CheckReidCase(dir, "48x32_s6_sie", 6, true);
}

TEST(ClipShapes, VitB16ParameterCounts) {
  VisionShape v;  // ViT-B/16 at 256x128, stride 16: 16x8 grid
  v.grid_h = 16;
  v.grid_w = 8;
  EXPECT_EQ(CountParameters(*VisionTransformer(v)), 86140416);
  EXPECT_EQ(CountParameters(*TextEncoder(TextShape())), 38131200);
  EXPECT_EQ(PatchGrid(256, 128, 16, 12), (std::pair<int64_t, int64_t>(21, 10)));
}

TEST(WeightImport, ListsEveryProblemInOneError) {
  ClipShape s;
  s.vision = {64, 2, 1, 8, 8, 4, 4, 32};
  s.text = {16, 514, 64, 1, 1, 32};
  Clip clip(s);
  StateDict sd = ModuleStateDict(*clip);
  sd.erase("visual.proj");
  sd["visual.bogus"] = torch::zeros({1});
  sd["ln_final.weight"] = torch::zeros({65});
  std::string error;
  EXPECT_FALSE(LoadStateDict(*clip, sd, "w.pth", &error));
  EXPECT_NE(error.find("1 unknown, 1 missing, 1 mis-shaped"), std::string::npos) << error;
  EXPECT_NE(error.find("unknown key: visual.bogus"), std::string::npos) << error;
  EXPECT_NE(error.find("missing key: visual.proj"), std::string::npos) << error;
  EXPECT_NE(error.find("shape mismatch: ln_final.weight [65]"), std::string::npos) << error;
}

TEST(WeightImport, UnreadableFilesAreUserErrors) {
  std::string error;
  EXPECT_FALSE(LoadClip("/nonexistent/ViT-B-16.pt", &error));
  EXPECT_NE(error.find("cannot open weights file '/nonexistent/ViT-B-16.pt'"), std::string::npos);
  EXPECT_FALSE(LoadClip("configs/synthetic_tiny.textproto", &error));
  EXPECT_NE(error.find("neither a TorchScript archive nor a torch.save zip"), std::string::npos)
      << error;
}

TEST(PositionalEmbedding, ResizeKeepsClsAndIsIdentityOnSameGrid) {
  auto pos = torch::randn({1 + 4 * 4, 8});
  auto same = ResizePositionalEmbedding(pos, 4, 4, 4, 4);
  EXPECT_TRUE(torch::equal(same, pos));
  auto r = ResizePositionalEmbedding(pos, 4, 4, 6, 3);
  EXPECT_EQ(r.size(0), 1 + 6 * 3);
  EXPECT_TRUE(torch::equal(r[0], pos[0]));
}

}  // namespace
}  // namespace reid::model
