// Prompt learner, context adjustment network and cross-modal attention (docs/design.md 4).
#include "trainer/model/prompt.h"

#include <cmath>

namespace reid::model {

StatusOr<PromptTemplate> BuildPromptTemplate(const Tokenizer& tokenizer, const std::string& text,
                                             int64_t n_ctx, int64_t context_length) {
  const std::string kCtx = "{ctx}";
  const size_t at = text.find(kCtx);
  if (at == std::string::npos || text.find(kCtx, at + 1) != std::string::npos) {
    return Status::InvalidArgument("prompt.template = \"" + text +
                                   "\": needs exactly one {ctx} placeholder");
  }
  if (n_ctx < 1)
    return Status::InvalidArgument("prompt.n_ctx = " + std::to_string(n_ctx) +
                                   ": must be at least 1");
  std::string words;
  for (int64_t i = 0; i < n_ctx; ++i) words += i ? " X" : "X";
  const std::string expanded = text.substr(0, at) + words + text.substr(at + kCtx.size());
  StatusOr<std::vector<int64_t>> full = tokenizer.Tokenize(expanded, context_length, false);
  StatusOr<std::vector<int64_t>> prefix =
      full.ok() ? tokenizer.Tokenize(text.substr(0, at), context_length, false) : full;
  if (!prefix.ok()) {
    return prefix.status().Annotate("prompt.template = \"" + text + "\" with n_ctx " +
                                    std::to_string(n_ctx));
  }
  const int64_t x_id = tokenizer.Encode("x").at(0);
  const int64_t start = static_cast<int64_t>(prefix->size()) - 1;  // sot + prefix words
  bool ok = start + n_ctx < static_cast<int64_t>(full->size());
  for (int64_t i = 0; ok && i < start; ++i) ok = (*full)[i] == (*prefix)[i];
  for (int64_t i = 0; ok && i < n_ctx; ++i) ok = (*full)[start + i] == x_id;
  if (!ok) {
    return Status::InvalidArgument("prompt.template = \"" + text +
                                   "\": {ctx} must stand as separate words");
  }
  PromptTemplate out;
  out.n_ctx = n_ctx;
  out.ctx_start = start;
  out.eot = static_cast<int64_t>(full->size()) - 1;
  out.tokens = *full;
  out.tokens.resize(context_length, 0);
  return out;
}

PromptLearnerImpl::PromptLearnerImpl(const PromptTemplate& tmpl, const torch::Tensor& embedding,
                                     int64_t num_classes, double init_std)
    : tmpl_(tmpl) {
  CHECK_EQ(embedding.dim(), 3) << "template embedding must be (1, L, W)";
  const int64_t l = embedding.size(1), w = embedding.size(2);
  CHECK_EQ(l, static_cast<int64_t>(tmpl.tokens.size())) << "template length vs embedding";
  cls_ctx = register_parameter("cls_ctx", torch::randn({num_classes, tmpl.n_ctx, w}) * init_std);
  auto e = embedding.detach();
  token_prefix = register_buffer("token_prefix", e.slice(1, 0, tmpl.ctx_start).clone());
  token_suffix = register_buffer("token_suffix", e.slice(1, tmpl.ctx_start + tmpl.n_ctx).clone());
  CHECK_EQ(token_prefix.size(1) + tmpl.n_ctx + token_suffix.size(1), l);
}

torch::Tensor PromptLearnerImpl::forward(const torch::Tensor& labels, const torch::Tensor& adjust) {
  const int64_t b = labels.size(0);
  auto ctx = cls_ctx.index_select(0, labels.to(torch::kLong));  // (B, n, W)
  if (adjust.defined()) ctx = ctx + adjust.unsqueeze(1);        // C_k = Y_k + M
  return torch::cat({token_prefix.expand({b, -1, -1}), ctx, token_suffix.expand({b, -1, -1})}, 1);
}

torch::Tensor PromptLearnerImpl::EotPositions(int64_t batch) const {
  return torch::full({batch}, tmpl_.eot, torch::TensorOptions().dtype(torch::kLong))
      .to(cls_ctx.device());
}

ContextAdjustImpl::ContextAdjustImpl(int64_t embed_dim, int64_t hidden_dim, int64_t token_width) {
  fc1 = register_module("fc1", torch::nn::Linear(embed_dim, hidden_dim));
  fc2 = register_module("fc2", torch::nn::Linear(hidden_dim, token_width));
}

torch::Tensor ContextAdjustImpl::forward(const torch::Tensor& f) {
  return fc2(torch::relu(fc1(f)));
}

CrossModalAttentionImpl::CrossModalAttentionImpl(int64_t embed_dim, int64_t num_heads,
                                                 int64_t hidden_dim, bool literal_unscaled)
    : scale_(literal_unscaled ? 1.0 : 1.0 / std::sqrt(static_cast<double>(embed_dim))) {
  image_attn = register_module("image_attn", MultiheadAttention(embed_dim, num_heads));
  text_attn = register_module("text_attn", MultiheadAttention(embed_dim, num_heads));
  w_i = register_module(
      "w_i", torch::nn::Linear(torch::nn::LinearOptions(embed_dim, hidden_dim).bias(false)));
  w_t = register_module(
      "w_t", torch::nn::Linear(torch::nn::LinearOptions(embed_dim, hidden_dim).bias(false)));
  w_o = register_module("w_o", torch::nn::Linear(hidden_dim, embed_dim));
}

torch::Tensor CrossModalAttentionImpl::forward(const torch::Tensor& image,
                                               const torch::Tensor& text) {
  auto a_i = image_attn(image.unsqueeze(0)).squeeze(0);  // (B, D): attention over the set
  auto a_t = text_attn(text.unsqueeze(0)).squeeze(0);    // (M, D)
  auto p_i = w_i(a_i);                                   // (B, H)
  auto p_t = w_t(a_t);                                   // (M, H)
  auto s = torch::softmax(torch::matmul(p_i, p_t.t()) * scale_, -1);  // (B, M)
  return w_o(torch::matmul(s, p_t) + p_i);                            // (B, D)
}

torch::Tensor CrossModalAttentionImpl::Logits(const torch::Tensor& image,
                                              const torch::Tensor& text) {
  return torch::matmul(forward(image, text), text.t());  // (B, M)
}

}  // namespace reid::model
