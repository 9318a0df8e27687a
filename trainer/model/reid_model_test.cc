// The ReID model: prompt template positions, prompt learner with g, cross-modal attention against
// eq. 1 written out, heads' initialisation, the tiny config end to end, and checkpoint reloading.
#include "trainer/model/reid_model.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

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

TEST(PromptTemplate, PositionsOfContextAndEnd) {
  std::string error;
  auto tok = Tokenizer::Create("", &error);
  PromptTemplate t;
  ASSERT_TRUE(BuildPromptTemplate(*tok, "A photo of a {ctx} person.", 4, 77, &t, &error)) << error;
  EXPECT_EQ(t.ctx_start, 10);  // <sot> a p h o t o o f a (no merges in the byte-level fallback)
  EXPECT_EQ(t.tokens.size(), 77u);
  EXPECT_EQ(t.tokens[10], 343);
  EXPECT_EQ(t.tokens[t.eot], tok->eot());
  ASSERT_TRUE(BuildPromptTemplate(*tok, "{ctx} person.", 8, 24, &t, &error)) << error;
  EXPECT_EQ(t.ctx_start, 1);
  EXPECT_FALSE(BuildPromptTemplate(*tok, "no placeholder", 4, 77, &t, &error));
  EXPECT_NE(error.find("exactly one {ctx}"), std::string::npos) << error;
  EXPECT_FALSE(BuildPromptTemplate(*tok, "a{ctx} person", 4, 77, &t, &error));
  EXPECT_NE(error.find("separate words"), std::string::npos) << error;
}

TEST(PromptLearner, ContextTokensPlusAdjustmentBetweenPrefixAndSuffix) {
  std::string error;
  auto tok = Tokenizer::Create("", &error);
  PromptTemplate t;
  ASSERT_TRUE(BuildPromptTemplate(*tok, "a {ctx} person.", 2, 16, &t, &error)) << error;
  ASSERT_EQ(t.ctx_start, 2);
  EXPECT_EQ(t.eot, 11);
  auto emb = torch::randn({1, 16, 8});
  PromptLearner pl(t, emb, /*num_classes=*/3, 0.02);
  EXPECT_NEAR(pl->cls_ctx.std().item<double>(), 0.02, 0.01);
  auto labels = torch::tensor({2, 0}, torch::kLong);
  auto m = torch::randn({2, 8});
  auto p = pl(labels, m);  // (2, 16, 8)
  EXPECT_TRUE(torch::allclose(p[0].slice(0, 0, 2), emb[0].slice(0, 0, 2)));
  EXPECT_TRUE(torch::allclose(p[1].slice(0, 4), emb[0].slice(0, 4)));
  EXPECT_TRUE(torch::allclose(p[0][2], pl->cls_ctx[2][0] + m[0]));
  EXPECT_TRUE(torch::allclose(p[1][3], pl->cls_ctx[0][1] + m[1]));
  EXPECT_EQ(pl->EotPositions(2)[1].item<int64_t>(), 11);
}

TEST(CrossModalAttention, MatchesEquationOne) {
  torch::manual_seed(3);
  for (bool literal : {false, true}) {
    CrossModalAttention x(16, 4, 12, literal);
    auto img = torch::randn({5, 16}), txt = torch::randn({7, 16});
    auto a_i = x->image_attn(img.unsqueeze(0)).squeeze(0);
    auto a_t = x->text_attn(txt.unsqueeze(0)).squeeze(0);
    auto p_i = torch::matmul(a_i, x->w_i->weight.t()), p_t = torch::matmul(a_t, x->w_t->weight.t());
    auto s = torch::softmax(torch::matmul(p_i, p_t.t()) / (literal ? 1.0 : 4.0), -1);
    auto o = torch::matmul(torch::matmul(s, p_t) + p_i, x->w_o->weight.t()) + x->w_o->bias;
    EXPECT_TRUE(torch::allclose(x(img, txt), o, 1e-5, 1e-6)) << "literal " << literal;
    EXPECT_TRUE(torch::allclose(x->Logits(img, txt), torch::matmul(o, txt.t()), 1e-5, 1e-5));
    // The self-attention runs across the set of image features (A_i = SelfAttn(I)), so another
    // sample of the batch changes this sample's output; text likewise.
    auto img2 = img.clone(), txt2 = txt.clone();
    img2[1] += 1.0;
    txt2[3] += 1.0;
    EXPECT_FALSE(torch::allclose(x(img2, txt)[0], x(img, txt)[0], 1e-4, 1e-5))
        << "literal " << literal;
    EXPECT_FALSE(torch::allclose(x(img, txt2)[0], x(img, txt)[0], 1e-4, 1e-5))
        << "literal " << literal;
  }
}

TEST(ReidModel, TinyConfigShapesHeadsAndModules) {
  proto::ReidConfig cfg = TinyConfig();
  cfg.mutable_model()->set_sie_camera(true);
  std::string error;
  ReidModel model = BuildReidModel(cfg, /*num_classes=*/6, /*num_cameras=*/4, &error);
  ASSERT_TRUE(model) << error;
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

TEST(ReidModel, LoadsOpenAiClipAndItsOwnCheckpoint) {
  if (testing::ClipFixtureDir().empty())
    GTEST_SKIP() << "trainer/model/testdata/clip_fixtures missing";
  proto::ReidConfig cfg = TinyConfig();
  cfg.mutable_model()->set_weights(testing::ClipFixtureDir() + "/clip_jit.pt");
  cfg.mutable_model()->set_context_length(77);
  cfg.mutable_model()->set_vision_heads(2);  // as the fixture's build_model: width / 64
  cfg.mutable_model()->set_transformer_heads(2);
  cfg.mutable_input()->mutable_size_train()->set_height(48);  // 6x4 grid from the 4x4 checkpoint
  std::string error;
  ReidModel model = BuildReidModel(cfg, 5, 2, &error);
  ASSERT_TRUE(model) << error;
  EXPECT_EQ(model->image_encoder->positional_embedding.size(0), 1 + 6 * 4);
  EXPECT_EQ(model->shape().vision.heads, 2);
  // Saved with torch::save and read back by name into a fresh model: same inference feature.
  char tmpl[] = "/tmp/reid_model_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/reid_model.pt";
  torch::save(model, path);
  cfg.mutable_model()->set_weights(path);
  ReidModel again = BuildReidModel(cfg, 5, 2, &error);
  ASSERT_TRUE(again) << error;
  model->eval();
  again->eval();
  auto images = torch::randn({2, 3, 48, 32});
  EXPECT_TRUE(torch::equal(model->InferenceFeature(images), again->InferenceFeature(images)));
  ReidModel wrong_classes = BuildReidModel(cfg, 7, 2, &error);
  EXPECT_FALSE(wrong_classes);
  EXPECT_NE(error.find("shape mismatch: classifier.weight [5, 128]"), std::string::npos) << error;
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace reid::model
