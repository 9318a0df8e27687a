// The text-side modules: prompt template positions, the prompt learner with g's adjustment, and the
// cross-modal attention against eq. 1 written out.
#include "trainer/model/prompt.h"

#include <gtest/gtest.h>

#include <string>

#include "base/status_test_util.h"
#include "trainer/model/tokenizer.h"

namespace reid::model {
namespace {

TEST(PromptTemplate, PositionsOfContextAndEnd) {
  auto tok = *Tokenizer::Create("");
  StatusOr<PromptTemplate> t = BuildPromptTemplate(*tok, "A photo of a {ctx} person.", 4, 77);
  ASSERT_OK(t);
  EXPECT_EQ(t->ctx_start, 10);  // <sot> a p h o t o o f a (no merges in the byte-level fallback)
  EXPECT_EQ(t->tokens.size(), 77u);
  EXPECT_EQ(t->tokens[10], 343);
  EXPECT_EQ(t->tokens[t->eot], tok->eot());
  t = BuildPromptTemplate(*tok, "{ctx} person.", 8, 24);
  ASSERT_OK(t);
  EXPECT_EQ(t->ctx_start, 1);
  t = BuildPromptTemplate(*tok, "no placeholder", 4, 77);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().exit_code(), 2);
  EXPECT_NE(t.status().message().find("exactly one {ctx}"), std::string::npos)
      << t.status().message();
  t = BuildPromptTemplate(*tok, "a{ctx} person", 4, 77);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("separate words"), std::string::npos) << t.status().message();
  t = BuildPromptTemplate(*tok, "a {ctx} person", 30, 16);  // 32 tokens in a context of 16
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("with n_ctx 30: text has more than context length 16"),
            std::string::npos)
      << t.status().message();
}

TEST(PromptLearner, ContextTokensPlusAdjustmentBetweenPrefixAndSuffix) {
  auto tok = *Tokenizer::Create("");
  StatusOr<PromptTemplate> built = BuildPromptTemplate(*tok, "a {ctx} person.", 2, 16);
  ASSERT_OK(built);
  const PromptTemplate& t = *built;
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

}  // namespace
}  // namespace reid::model
