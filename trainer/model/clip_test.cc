// Parity of the C++ CLIP with the Python reference (tests/clip_reference.py) on tiny random
// checkpoints in both formats, the ViT-B/16 parameter counts and the positional-embedding resize
// (weight-import errors are weights_test.cc's).
#include "trainer/model/clip.h"

#include <gtest/gtest.h>

#include "base/status_test_util.h"
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
  StatusOr<Clip> loaded = LoadClip(dir + "/" + GetParam());
  ASSERT_OK(loaded);
  Clip clip = *loaded;
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
  StatusOr<Clip> loaded = LoadClip(dir + "/clip_state.pth");
  ASSERT_OK(loaded);
  Clip clip = *loaded;
  VisionShape s = clip->visual->shape();
  s.stride = stride;
  std::tie(s.grid_h, s.grid_w) = PatchGrid(48, 32, s.patch, stride);
  VisionTransformer vis(s);
  StateDict sd = ModuleStateDict(*clip->visual);
  sd["positional_embedding"] =
      ResizePositionalEmbedding(sd["positional_embedding"], 4, 4, s.grid_h, s.grid_w);
  const Status fitted = LoadStateDict(*vis, sd, "visual");
  ASSERT_OK(fitted);
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
