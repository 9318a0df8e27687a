// The ReID model: heads' initialisation, the tiny config end to end, and checkpoint reloading
// (the prompt learner, g and the cross-modal attention are prompt_test.cc's).
#include "trainer/model/reid_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "base/status_test_util.h"
#include "proto/config.h"
#include "trainer/model/test_util.h"

namespace reid::model {
namespace {

proto::ReidConfig TinyConfig() {
  proto::ReidConfig cfg;
  config::Problems problems = config::Load("configs/synthetic_tiny.textproto", {}, &cfg);
  CHECK(problems.empty()) << problems[0];
  return cfg;
}

TEST(ReidModel, TinyConfigShapesHeadsAndModules) {
  proto::ReidConfig cfg = TinyConfig();
  cfg.mutable_model()->set_sie_camera(true);
  StatusOr<ReidModel> built = BuildReidModel(cfg, /*num_classes=*/6, /*num_cameras=*/4);
  ASSERT_OK(built);
  ReidModel model = *built;
  EXPECT_TRUE(model->has_context_adjust());
  EXPECT_TRUE(model->has_cross_attention());
  EXPECT_EQ(model->image_encoder->positional_embedding.size(0), 1 + 8 * 4);  // 64x32, patch 8
  EXPECT_FALSE(model->bottleneck->bias.requires_grad());
  EXPECT_EQ(model->bottleneck->bias.abs().sum().item<double>(), 0);
  EXPECT_FALSE(model->classifier->bias.defined());
  EXPECT_NEAR(model->classifier->weight.std().item<double>(), 0.001, 0.0005);
  auto images = torch::randn({3, 3, 64, 32});
  auto cams = torch::tensor({0, 3, 1}, torch::kLong);
  model->train();
  ReidTrainOutputs o = model->ForwardTrain(images, cams);
  EXPECT_EQ(o.score.sizes(), (std::vector<int64_t>{3, 6}));
  EXPECT_EQ(o.feat_last.sizes(), (std::vector<int64_t>{3, 128}));
  EXPECT_EQ(o.feat_proj.sizes(), (std::vector<int64_t>{3, 64}));
  model->eval();
  auto f = model->InferenceFeature(images, cams);
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{3, 128 + 64}));
  EXPECT_TRUE(torch::allclose(f.slice(1, 128), model->EncodeImage(images, cams).cls_proj));
  auto text = model->EncodeText(torch::tensor({1, 5, 0}, torch::kLong), o.feat_proj);
  EXPECT_EQ(text.sizes(), (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(model->ImageTextLogits(o.feat_proj, text).sizes(), (std::vector<int64_t>{3, 3}));
  // Gradients reach the context tokens and g through the frozen-shape text encoder.
  text.sum().backward();
  EXPECT_GT(model->prompt_learner->cls_ctx.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(model->context_adjust->fc1->weight.grad().abs().sum().item<double>(), 0);
}

// The stage split is the model's: checked against its submodules, not against name prefixes.
TEST(ReidModel, SetTrainableSplitsTheStagesByModule) {
  proto::ReidConfig cfg = TinyConfig();
  cfg.mutable_model()->set_sie_camera(true);
  StatusOr<ReidModel> built = BuildReidModel(cfg, /*num_classes=*/6, /*num_cameras=*/4);
  ASSERT_OK(built);
  ReidModel model = *built;
  ASSERT_TRUE(model->has_context_adjust());
  ASSERT_TRUE(model->has_cross_attention());
  auto all_train = [](const torch::nn::Module& m, bool want) {
    int64_t n = 0;
    for (const auto& p : m.named_parameters()) {
      EXPECT_EQ(p.value().requires_grad(), want) << p.key();
      ++n;
    }
    return n;
  };
  // A gradient left from before is dropped.
  model->prompt_learner->cls_ctx.mutable_grad() = torch::ones_like(model->prompt_learner->cls_ctx);

  model->SetTrainable(1);
  EXPECT_FALSE(model->prompt_learner->cls_ctx.grad().defined());
  EXPECT_TRUE(model->prompt_learner->cls_ctx.requires_grad());
  EXPECT_GT(all_train(*model->context_adjust, true), 0);
  all_train(*model->image_encoder, false);
  all_train(*model->text_encoder, false);
  all_train(*model->cross_attention, false);
  all_train(*model->classifier, false);
  EXPECT_FALSE(model->cv_embed.requires_grad());
  int64_t stage1 = 0;
  for (const auto& p : model->parameters()) stage1 += p.requires_grad();
  EXPECT_EQ(stage1, 1 + static_cast<int64_t>(model->context_adjust->parameters().size()));

  model->SetTrainable(2);
  EXPECT_GT(all_train(*model->image_encoder, true), 0);
  EXPECT_GT(all_train(*model->cross_attention, true), 0);
  all_train(*model->classifier, true);
  all_train(*model->classifier_proj, true);
  EXPECT_TRUE(model->cv_embed.requires_grad());
  EXPECT_TRUE(model->bottleneck->weight.requires_grad());
  EXPECT_FALSE(model->bottleneck->bias.requires_grad());  // frozen at zero, as CLIP-ReID
  EXPECT_FALSE(model->bottleneck_proj->bias.requires_grad());
  all_train(*model->text_encoder, false);
  all_train(*model->prompt_learner, false);
  all_train(*model->context_adjust, false);
}

TEST(ReidModel, LoadsOpenAiClipAndItsOwnCheckpoint) {
  if (testing::ClipFixtureDir().empty())
    GTEST_SKIP() << "trainer/model/testdata/clip_fixtures missing";
  proto::ReidConfig cfg = TinyConfig();
  cfg.mutable_model()->set_weights(testing::ClipFixtureDir() + "/clip_jit.pt");
  cfg.mutable_model()->set_context_length(77);
  cfg.mutable_model()->set_vision_heads(2);  // as the fixture's build_model: width / 64
  cfg.mutable_model()->set_transformer_heads(2);
  cfg.mutable_input()->mutable_size_train()->set_height(48);  // 6x4 grid from the 4x4 checkpoint
  StatusOr<ReidModel> built = BuildReidModel(cfg, 5, 2);
  ASSERT_OK(built);
  ReidModel model = *built;
  EXPECT_EQ(model->image_encoder->positional_embedding.size(0), 1 + 6 * 4);
  EXPECT_EQ(model->shape().vision.heads, 2);
  // Saved with torch::save and read back by name into a fresh model: same inference feature.
  char tmpl[] = "/tmp/reid_model_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/reid_model.pt";
  torch::save(model, path);
  cfg.mutable_model()->set_weights(path);
  StatusOr<ReidModel> reloaded = BuildReidModel(cfg, 5, 2);
  ASSERT_OK(reloaded);
  ReidModel again = *reloaded;
  model->eval();
  again->eval();
  auto images = torch::randn({2, 3, 48, 32});
  EXPECT_TRUE(torch::equal(model->InferenceFeature(images), again->InferenceFeature(images)));
  StatusOr<ReidModel> wrong_classes = BuildReidModel(cfg, 7, 2);
  ASSERT_FALSE(wrong_classes.ok());
  EXPECT_EQ(wrong_classes.status().exit_code(), 2);
  EXPECT_NE(wrong_classes.status().message().find("shape mismatch: classifier.weight [5, 128]"),
            std::string::npos)
      << wrong_classes.status().message();
  std::filesystem::remove_all(tmpl);
}

TEST(ReidModel, CheckModelFilesComparesWeightsAndVocabularyWithTheConfig) {
  proto::ReidConfig cfg = TinyConfig();
  EXPECT_OK(CheckModelFiles(cfg.model())) << "random init, byte-level tokenizer: 514 ids";
  cfg.mutable_model()->set_vocab_size(49408);
  Status s = CheckModelFiles(cfg.model());
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_NE(s.message().find("byte-level tokenizer gives 514 token ids but model.vocab_size is "
                             "49408"),
            std::string::npos)
      << s.message();
  cfg.mutable_model()->set_vocab_size(514);
  if (testing::ClipFixtureDir().empty())
    GTEST_SKIP() << "trainer/model/testdata/clip_fixtures missing";
  cfg.mutable_model()->set_weights(testing::ClipFixtureDir() + "/clip_state.pth");
  s = CheckModelFiles(cfg.model());
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_NE(s.message().find("the weights have context_length 77 (config 24), transformer_width "
                             "128 (config 64);"),
            std::string::npos)
      << s.message();
  cfg.mutable_model()->set_context_length(77);
  cfg.mutable_model()->set_transformer_width(128);
  EXPECT_OK(CheckModelFiles(cfg.model()));
  cfg.mutable_model()->set_bpe_vocab("/nonexistent/bpe_simple_vocab_16e6.txt.gz");
  s = CheckModelFiles(cfg.model());
  EXPECT_EQ(s.exit_code(), 2) << s.message();
}

}  // namespace
}  // namespace reid::model
