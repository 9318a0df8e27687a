// The text-side modules of the improved CLIP-ReID: the prompt learner (n class-specific context
// tokens in a template), the context adjustment network g (paper 2.2) and the cross-modal
// attention (paper 2.3, eq. 1). Shape letters as defined in clip.h (here W is the text
// transformer's width).
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "trainer/model/clip.h"
#include "trainer/model/tokenizer.h"

namespace reid::model {

// A template such as "A photo of a {ctx} person." tokenised with the placeholder expanded to n
// "X" words, which the learnable tokens replace.
struct PromptTemplate {
  std::vector<int64_t> tokens;  // (L) padded with 0
  int64_t ctx_start = 0;        // position of the first context token
  int64_t n_ctx = 0;
  int64_t eot = 0;  // position of the end token (argmax of the ids)
};

// InvalidArgument (naming the template) when the template has no or several "{ctx}", when the
// placeholder does not stand as separate words, or when the prompt exceeds context_length.
StatusOr<PromptTemplate> BuildPromptTemplate(const Tokenizer& tokenizer, const std::string& text,
                                             int64_t n_ctx, int64_t context_length);

// CLIP-ReID's PromptLearner: cls_ctx (C, n, W) ~ N(0, std); token_prefix / token_suffix buffers
// from the token embedding of the template.
class PromptLearnerImpl : public torch::nn::Module {
 public:
  // embedding: (1, L, W) token embedding of tmpl.tokens.
  PromptLearnerImpl(const PromptTemplate& tmpl, const torch::Tensor& embedding, int64_t num_classes,
                    double init_std);
  // labels (B) -> prompts (B, L, W); adjust (B, W) (the M of g) is added to every context token.
  torch::Tensor forward(const torch::Tensor& labels, const torch::Tensor& adjust = {});
  // (B) int64 positions of the end token.
  torch::Tensor EotPositions(int64_t batch) const;

  torch::Tensor cls_ctx, token_prefix, token_suffix;

 private:
  PromptTemplate tmpl_;
};
TORCH_MODULE(PromptLearner);

// g: M = W2 ReLU(W1 f + b1) + b2, f (B, D) -> M (B, W).
class ContextAdjustImpl : public torch::nn::Module {
 public:
  ContextAdjustImpl(int64_t embed_dim, int64_t hidden_dim, int64_t token_width);
  torch::Tensor forward(const torch::Tensor& f);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(ContextAdjust);

// Eq. 1 over a set of image features I (B, D) and text features T (M, D):
// A_i = SelfAttn(I), A_t = SelfAttn(T), P_i = W_i A_i, P_t = W_t A_t,
// S = softmax(P_i P_t^T / sqrt(D)) (no scale when literal_unscaled), O = W_o (S P_t + P_i) + b_o.
class CrossModalAttentionImpl : public torch::nn::Module {
 public:
  CrossModalAttentionImpl(int64_t embed_dim, int64_t num_heads, int64_t hidden_dim,
                          bool literal_unscaled);
  torch::Tensor forward(const torch::Tensor& image, const torch::Tensor& text);  // -> O (B, D)
  // logits = O T^T (B, M).
  torch::Tensor Logits(const torch::Tensor& image, const torch::Tensor& text);

  MultiheadAttention image_attn{nullptr}, text_attn{nullptr};
  torch::nn::Linear w_i{nullptr}, w_t{nullptr}, w_o{nullptr};

 private:
  double scale_;
};
TORCH_MODULE(CrossModalAttention);

}  // namespace reid::model
