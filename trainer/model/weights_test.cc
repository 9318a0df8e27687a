// Weight import errors: a strict load lists every unknown, missing and mis-shaped key in one
// error, and unreadable or foreign files are user errors naming the file. (Loading the CLIP
// fixtures in both formats is clip_test.cc's parity test.)
#include "trainer/model/weights.h"

#include <gtest/gtest.h>

#include <string>

namespace reid::model {
namespace {

TEST(WeightImport, ListsEveryProblemInOneError) {
  ClipShape s;
  s.vision = {64, 2, 1, 8, 8, 4, 4, 32};
  s.text = {16, 514, 64, 1, 1, 32};
  Clip clip(s);
  StateDict sd = ModuleStateDict(*clip);
  sd.erase("visual.proj");
  sd["visual.bogus"] = torch::zeros({1});
  sd["ln_final.weight"] = torch::zeros({65});
  const Status s_load = LoadStateDict(*clip, sd, "w.pth");
  EXPECT_FALSE(s_load.ok());
  EXPECT_EQ(s_load.exit_code(), 2);
  const std::string& error = s_load.message();
  EXPECT_NE(error.find("1 unknown, 1 missing, 1 mis-shaped"), std::string::npos) << error;
  EXPECT_NE(error.find("unknown key: visual.bogus"), std::string::npos) << error;
  EXPECT_NE(error.find("missing key: visual.proj"), std::string::npos) << error;
  EXPECT_NE(error.find("shape mismatch: ln_final.weight [65]"), std::string::npos) << error;
}

TEST(WeightImport, UnreadableFilesAreUserErrors) {
  StatusOr<Clip> missing = LoadClip("/nonexistent/ViT-B-16.pt");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().exit_code(), 2);
  EXPECT_NE(missing.status().message().find("cannot open weights file '/nonexistent/ViT-B-16.pt'"),
            std::string::npos);
  StatusOr<Clip> text = LoadClip("configs/synthetic_tiny.textproto");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().exit_code(), 2);
  EXPECT_NE(text.status().message().find("neither a TorchScript archive nor a torch.save zip"),
            std::string::npos)
      << text.status().message();
}

}  // namespace
}  // namespace reid::model
