// OpenAI CLIP's encoders (clip/model.py) with CLIP-ReID's image-side adaptations.
#include "trainer/model/clip.h"

#include <cmath>
#include <limits>

#include "trainer/model/cpu_kernels.h"

namespace reid::model {
namespace F = torch::nn::functional;

namespace {

// Whether the encoders make only the rows of their last block that are read (the CLS token, the
// end token): while gradients are recorded, i.e. in training, where it saves all of the last
// block's products but its keys' and values' (about 7% of an encoder step). Without gradients
// (features for evaluation, `embed`, `extract`) every token is made as in CLIP: there each
// product then has B x L rows, so OpenBLAS takes the same kernel whatever the batch's size and a
// crop's features have the same bits in any batch; products of B rows (B small) would not.
bool RowsOnlyLastBlock() { return torch::GradMode::is_enabled(); }

}  // namespace

torch::Tensor LayerNormFp32(torch::nn::LayerNorm& ln, const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat) return ln(x);
  return ln(x.to(torch::kFloat)).to(x.scalar_type());
}

MultiheadAttentionImpl::MultiheadAttentionImpl(int64_t width, int64_t heads) : heads_(heads) {
  CHECK_GT(heads, 0) << "attention heads";
  CHECK_EQ(width % heads, 0) << "width " << width << " is not divisible by heads " << heads;
  in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
  in_proj_bias = register_parameter("in_proj_bias", torch::zeros({3 * width}));
  out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  torch::NoGradGuard no_grad;
  in_proj_weight.normal_(0, std::pow(width, -0.5));
  out_proj->bias.zero_();
}

torch::Tensor MultiheadAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  auto qkv = Linear(x, in_proj_weight, in_proj_bias);  // (B, L, 3W)
  return Linear(Attention(qkv, heads_, mask), out_proj->weight, out_proj->bias);
}

torch::Tensor MultiheadAttentionImpl::ForwardQuery(const torch::Tensor& x, const torch::Tensor& xq,
                                                   const torch::Tensor& mask_rows) {
  const int64_t b = x.size(0), l = x.size(1), w = x.size(2), hd = w / heads_;
  auto q = Linear(xq, in_proj_weight.slice(0, 0, w), in_proj_bias.slice(0, 0, w));  // (B, W)
  auto kv = Linear(x, in_proj_weight.slice(0, w), in_proj_bias.slice(0, w));        // (B, L, 2W)
  auto parts = kv.view({b, l, 2, heads_, hd}).permute({2, 0, 3, 1, 4});  // 2 x (B, heads, L, hd)
  q = q.view({b, heads_, 1, hd}) * (1.0 / std::sqrt(static_cast<double>(hd)));
  auto scores = torch::matmul(q, parts[0].transpose(-2, -1));  // (B, heads, 1, L)
  if (mask_rows.defined()) scores = scores + mask_rows.to(scores.scalar_type()).view({b, 1, 1, l});
  auto out = torch::matmul(torch::softmax(scores, -1), parts[1]);  // (B, heads, 1, hd)
  return Linear(out.reshape({b, w}), out_proj->weight, out_proj->bias);
}

MlpImpl::MlpImpl(int64_t width) {
  c_fc = register_module("c_fc", torch::nn::Linear(width, 4 * width));
  c_proj = register_module("c_proj", torch::nn::Linear(4 * width, width));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  return Linear(QuickGelu(Linear(x, c_fc->weight, c_fc->bias)), c_proj->weight, c_proj->bias);
}

ResidualAttentionBlockImpl::ResidualAttentionBlockImpl(int64_t width, int64_t heads) {
  attn = register_module("attn", MultiheadAttention(width, heads));
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
  mlp = register_module("mlp", Mlp(width));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})));
}

torch::Tensor ResidualAttentionBlockImpl::forward(const torch::Tensor& x,
                                                  const torch::Tensor& mask) {
  auto y = x + attn(LayerNormFp32(ln_1, x), mask);
  return y + mlp(LayerNormFp32(ln_2, y));
}

torch::Tensor ResidualAttentionBlockImpl::ForwardRows(const torch::Tensor& x,
                                                      const torch::Tensor& rows,
                                                      const torch::Tensor& mask) {
  const int64_t b = x.size(0), l = x.size(1), w = x.size(2);
  CHECK(rows.dim() == 1 && rows.size(0) == b) << "rows " << rows.sizes() << " for batch " << b;
  const auto index = rows.to(x.device(), torch::kLong);
  auto pick = [&](const torch::Tensor& t) {  // (B, L, W) -> (B, W) at rows
    return t.gather(1, index.view({b, 1, 1}).expand({b, 1, w})).squeeze(1);
  };
  torch::Tensor mask_rows;
  if (mask.defined()) {
    CHECK(mask.dim() == 2 && mask.size(0) == l && mask.size(1) == l)
        << "attention mask " << mask.sizes() << " for " << l << " tokens";
    mask_rows = mask.to(x.device()).index_select(0, index);  // (B, L)
  }
  auto h = LayerNormFp32(ln_1, x);
  auto y = pick(x) + attn->ForwardQuery(h, pick(h), mask_rows);
  return y + mlp(LayerNormFp32(ln_2, y));
}

TransformerImpl::TransformerImpl(int64_t width, int64_t layers, int64_t heads) {
  resblocks = register_module("resblocks", torch::nn::ModuleList());
  // OpenAI's initialize_parameters (applied to both towers here).
  const double attn_std = std::pow(width, -0.5);
  const double proj_std = attn_std * std::pow(2.0 * layers, -0.5);
  const double fc_std = std::pow(2.0 * width, -0.5);
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < layers; ++i) {
    ResidualAttentionBlock block(width, heads);
    block->attn->in_proj_weight.normal_(0, attn_std);
    block->attn->out_proj->weight.normal_(0, proj_std);
    block->mlp->c_fc->weight.normal_(0, fc_std);
    block->mlp->c_proj->weight.normal_(0, proj_std);
    resblocks->push_back(block);
  }
}

torch::Tensor TransformerImpl::Run(torch::Tensor x, const torch::Tensor& mask, int64_t first,
                                   int64_t last) {
  for (int64_t i = first; i < last; ++i) {
    x = resblocks->ptr<ResidualAttentionBlockImpl>(i)->forward(x, mask);
  }
  return x;
}

torch::Tensor TransformerImpl::RunLastAt(const torch::Tensor& x, const torch::Tensor& mask,
                                         const torch::Tensor& rows) {
  CHECK_GT(layers(), 0) << "a transformer without blocks";
  return resblocks->ptr<ResidualAttentionBlockImpl>(layers() - 1)->ForwardRows(x, rows, mask);
}

torch::Tensor TransformerImpl::forward(torch::Tensor x, const torch::Tensor& mask) {
  return Run(std::move(x), mask, 0, layers());
}

std::pair<int64_t, int64_t> PatchGrid(int64_t h, int64_t w, int64_t patch, int64_t stride) {
  CHECK(h >= patch && w >= patch && stride > 0)
      << "image " << h << "x" << w << " is smaller than the patch " << patch << " (stride "
      << stride << ")";
  return {(h - patch) / stride + 1, (w - patch) / stride + 1};
}

torch::Tensor ResizePositionalEmbedding(const torch::Tensor& posemb, int64_t old_h, int64_t old_w,
                                        int64_t new_h, int64_t new_w) {
  CHECK_EQ(posemb.size(0), 1 + old_h * old_w)
      << "positional embedding rows vs grid " << old_h << "x" << old_w;
  if (old_h == new_h && old_w == new_w) return posemb.clone();
  const int64_t w = posemb.size(1);
  auto tok = posemb.slice(0, 0, 1);  // (1, W)
  auto grid = posemb.slice(0, 1).reshape({1, old_h, old_w, w}).permute({0, 3, 1, 2});
  grid = F::interpolate(grid, F::InterpolateFuncOptions()
                                  .size(std::vector<int64_t>{new_h, new_w})
                                  .mode(torch::kBilinear)
                                  .align_corners(false));
  grid = grid.permute({0, 2, 3, 1}).reshape({new_h * new_w, w});
  return torch::cat({tok, grid}, 0);
}

VisionTransformerImpl::VisionTransformerImpl(const VisionShape& s) : shape_(s) {
  conv1 = register_module(
      "conv1", torch::nn::Conv2d(
                   torch::nn::Conv2dOptions(3, s.width, s.patch).stride(s.stride).bias(false)));
  const double scale = std::pow(s.width, -0.5);
  class_embedding = register_parameter("class_embedding", scale * torch::randn({s.width}));
  positional_embedding = register_parameter(
      "positional_embedding", scale * torch::randn({1 + s.grid_h * s.grid_w, s.width}));
  ln_pre = register_module("ln_pre", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.width})));
  transformer = register_module("transformer", Transformer(s.width, s.layers, s.heads));
  ln_post =
      register_module("ln_post", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.width})));
  proj = register_parameter("proj", scale * torch::randn({s.width, s.output_dim}));
}

void VisionTransformerImpl::ResizeGrid(int64_t grid_h, int64_t grid_w) {
  torch::NoGradGuard no_grad;
  auto resized = ResizePositionalEmbedding(positional_embedding.detach(), shape_.grid_h,
                                           shape_.grid_w, grid_h, grid_w);
  positional_embedding.set_data(resized);
  shape_.grid_h = grid_h;
  shape_.grid_w = grid_w;
}

VisionOutputs VisionTransformerImpl::forward(const torch::Tensor& x, const torch::Tensor& cv_emb) {
  CHECK_EQ(x.dim(), 4) << "images must be (B, 3, H, W)";
  auto [gh, gw] = PatchGrid(x.size(2), x.size(3), shape_.patch, shape_.stride);
  CHECK(gh == shape_.grid_h && gw == shape_.grid_w)
      << "image " << x.size(2) << "x" << x.size(3) << " gives a " << gh << "x" << gw
      << " patch grid but the positional embedding is " << shape_.grid_h << "x" << shape_.grid_w;
  const int64_t b = x.size(0);
  auto t = conv1(x).flatten(2).transpose(1, 2);  // (B, N, W)
  auto cls = class_embedding.to(t.scalar_type()).expand({b, 1, shape_.width});
  if (cv_emb.defined()) cls = cls + cv_emb.unsqueeze(1);  // SIE: CLS only, before pos-embed
  t = torch::cat({cls, t}, 1) + positional_embedding.to(t.scalar_type());  // (B, L, W)
  t = LayerNormFp32(ln_pre, t);
  const int64_t n = transformer->layers();
  auto last = transformer->Run(t, {}, 0, n - 1);
  VisionOutputs o;
  o.cls_last = last.select(1, 0);
  if (RowsOnlyLastBlock()) {
    o.cls =
        LayerNormFp32(ln_post, transformer->RunLastAt(last, {}, torch::zeros({b}, torch::kLong)));
  } else {
    o.cls = LayerNormFp32(ln_post, transformer->Run(last, {}, n - 1, n).select(1, 0));
  }
  o.cls_proj = torch::matmul(o.cls, proj);
  return o;
}

namespace {

torch::Tensor CausalMask(int64_t l) {
  return torch::full({l, l}, -std::numeric_limits<float>::infinity()).triu(1);
}

// x (B, L, W) embeddings + positions -> transformer -> ln_final -> row at eot @ projection.
torch::Tensor TextForward(Transformer& transformer, torch::nn::LayerNorm& ln_final,
                          const torch::Tensor& pos, const torch::Tensor& projection,
                          const torch::Tensor& mask, const torch::Tensor& x,
                          const torch::Tensor& eot) {
  CHECK_EQ(x.size(1), pos.size(0)) << "text length vs context_length";
  const auto m = mask.to(x.options());
  const int64_t n = transformer->layers();
  auto h = transformer->Run(x + pos.to(x.scalar_type()), m, 0, n - 1);
  if (RowsOnlyLastBlock()) {
    h = transformer->RunLastAt(h, m, eot);  // (B, W)
  } else {
    auto rows = torch::arange(h.size(0), eot.options().dtype(torch::kLong));
    h = transformer->Run(h, m, n - 1, n).index({rows, eot.to(torch::kLong)});
  }
  return torch::matmul(LayerNormFp32(ln_final, h), projection);  // (B, D)
}

}  // namespace

TextEncoderImpl::TextEncoderImpl(const TextShape& s) {
  positional_embedding =
      register_parameter("positional_embedding", torch::randn({s.context_length, s.width}) * 0.01);
  transformer = register_module("transformer", Transformer(s.width, s.layers, s.heads));
  ln_final =
      register_module("ln_final", torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.width})));
  text_projection = register_parameter(
      "text_projection", torch::randn({s.width, s.output_dim}) * std::pow(s.width, -0.5));
  mask_ = CausalMask(s.context_length);
}

torch::Tensor TextEncoderImpl::forward(const torch::Tensor& prompts, const torch::Tensor& eot) {
  return TextForward(transformer, ln_final, positional_embedding, text_projection, mask_, prompts,
                     eot);
}

ClipImpl::ClipImpl(const ClipShape& s) : shape_(s) {
  visual = register_module("visual", VisionTransformer(s.vision));
  transformer =
      register_module("transformer", Transformer(s.text.width, s.text.layers, s.text.heads));
  token_embedding =
      register_module("token_embedding", torch::nn::Embedding(s.text.vocab_size, s.text.width));
  positional_embedding = register_parameter(
      "positional_embedding", torch::randn({s.text.context_length, s.text.width}) * 0.01);
  ln_final = register_module("ln_final",
                             torch::nn::LayerNorm(torch::nn::LayerNormOptions({s.text.width})));
  text_projection =
      register_parameter("text_projection", torch::randn({s.text.width, s.text.output_dim}) *
                                                std::pow(s.text.width, -0.5));
  logit_scale = register_parameter("logit_scale", torch::full({}, std::log(1 / 0.07)));
  torch::NoGradGuard no_grad;
  token_embedding->weight.normal_(0, 0.02);
  mask_ = CausalMask(s.text.context_length);
}

torch::Tensor ClipImpl::EncodeImage(const torch::Tensor& images) { return visual(images).cls_proj; }

torch::Tensor ClipImpl::EncodeText(const torch::Tensor& tokens) {
  auto x = token_embedding(tokens);  // (B, L, W)
  return TextForward(transformer, ln_final, positional_embedding, text_projection, mask_, x,
                     tokens.argmax(-1));
}

int64_t CountParameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace reid::model
