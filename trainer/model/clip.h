// OpenAI CLIP's encoders as torch::nn modules with CLIP's parameter names: the ViT image encoder
// (with CLIP-ReID's stride, h x w grid, SIE input and three outputs) and the causal text
// transformer.
//
// Shape letters of the tensor comments in clip.h, prompt.h and reid_model.h (and their .cc):
//   B  batch (images, or their texts)      C  classes (training identities)
//   M  texts compared with the B images    L  tokens: a text's context length, or the ViT's 1 + N
//   N  patches (grid_h x grid_w)           n  learnable context tokens of a prompt
//   W  a transformer's width (768 vision, 512 text; W_text where both occur)
//   D  joint embedding width (512, CLIP's output_dim)   H  hidden width (g, common space)
// Image sizes are spelled out, (B, 3, height, width); capitals outside parentheses (I, T, M, O)
// are the paper's matrices, not shapes.
#pragma once

#include <cstdint>

#include "base/torch_glog.h"

namespace reid::model {

// OpenAI's LayerNorm: always computed in fp32, result in the input's dtype.
torch::Tensor LayerNormFp32(torch::nn::LayerNorm& ln, const torch::Tensor& x);

// nn.MultiheadAttention's math and names (in_proj_weight rows [Wq; Wk; Wv], in_proj_bias,
// out_proj), batch-first: x (B, L, W), optional additive mask (L, L).
class MultiheadAttentionImpl : public torch::nn::Module {
 public:
  MultiheadAttentionImpl(int64_t width, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});  // (B, L, W)
  // The same attention for one query token per batch row: x (B, L, W) all tokens (keys and
  // values), xq (B, W) the query token's input, mask_rows (B, L) that token's mask row or
  // undefined -> (B, W). Only the query's projections are made for one token.
  torch::Tensor ForwardQuery(const torch::Tensor& x, const torch::Tensor& xq,
                             const torch::Tensor& mask_rows);

  torch::Tensor in_proj_weight, in_proj_bias;
  torch::nn::Linear out_proj{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(MultiheadAttention);

// c_fc -> QuickGELU -> c_proj.
class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(int64_t width);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear c_fc{nullptr}, c_proj{nullptr};
};
TORCH_MODULE(Mlp);

// Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
class ResidualAttentionBlockImpl : public torch::nn::Module {
 public:
  ResidualAttentionBlockImpl(int64_t width, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  // The block's output at one token per batch row, rows (B) int64 -> (B, W): what forward(x,
  // mask) gives there, with the other tokens serving only as keys and values. For a last block
  // whose other outputs nobody reads, it saves all but the key/value products of the block.
  torch::Tensor ForwardRows(const torch::Tensor& x, const torch::Tensor& rows,
                            const torch::Tensor& mask = {});
  MultiheadAttention attn{nullptr};
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(ResidualAttentionBlock);

// `resblocks.N.*`. Run(x, mask, first, last) runs blocks [first, last).
class TransformerImpl : public torch::nn::Module {
 public:
  TransformerImpl(int64_t width, int64_t layers, int64_t heads);
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& mask = {});
  torch::Tensor Run(torch::Tensor x, const torch::Tensor& mask, int64_t first, int64_t last);
  // The last block's output at token rows[b] of each batch row b: (B, W), given x, the input of
  // the last block (the output of Run(..., 0, layers() - 1)).
  torch::Tensor RunLastAt(const torch::Tensor& x, const torch::Tensor& mask,
                          const torch::Tensor& rows);
  int64_t layers() const { return static_cast<int64_t>(resblocks->size()); }
  torch::nn::ModuleList resblocks{nullptr};
};
TORCH_MODULE(Transformer);

struct VisionShape {
  int64_t width = 768, layers = 12, heads = 12, patch = 16, stride = 16;
  int64_t grid_h = 14, grid_w = 14;  // grid of the positional embedding
  int64_t output_dim = 512;
};

// The three CLS features CLIP-ReID uses.
struct VisionOutputs {
  torch::Tensor cls_last;  // (B, W): output of block layers-2 (index 10 of 12), no LayerNorm
  torch::Tensor cls;       // (B, W): ln_post of the CLS token
  torch::Tensor cls_proj;  // (B, D): ln_post(CLS) @ proj = CLIP's encode_image
};

// Image size (h, w) -> patch grid: (h - patch) / stride + 1 per side (floored as CLIP-ReID).
std::pair<int64_t, int64_t> PatchGrid(int64_t h, int64_t w, int64_t patch, int64_t stride);

// CLIP-ReID's resize_pos_embed: CLS row kept, grid rows resized bilinearly (align_corners false).
torch::Tensor ResizePositionalEmbedding(const torch::Tensor& posemb,  // (1 + N, W)
                                        int64_t old_h, int64_t old_w, int64_t new_h, int64_t new_w);

class VisionTransformerImpl : public torch::nn::Module {
 public:
  explicit VisionTransformerImpl(const VisionShape& shape);
  // x (B, 3, height, width) giving the positional grid; cv_emb (B, W) added to CLS or undefined.
  VisionOutputs forward(const torch::Tensor& x, const torch::Tensor& cv_emb = {});
  // Resizes the positional embedding in place to a new grid.
  void ResizeGrid(int64_t grid_h, int64_t grid_w);
  const VisionShape& shape() const { return shape_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::Tensor class_embedding, positional_embedding, proj;
  torch::nn::LayerNorm ln_pre{nullptr}, ln_post{nullptr};
  Transformer transformer{nullptr};

 private:
  VisionShape shape_;
};
TORCH_MODULE(VisionTransformer);

struct TextShape {
  int64_t context_length = 77, vocab_size = 49408, width = 512, heads = 8, layers = 12;
  int64_t output_dim = 512;
};

// The text side without the token embedding (CLIP-ReID's TextEncoder): positional_embedding,
// transformer (causal), ln_final, text_projection.
class TextEncoderImpl : public torch::nn::Module {
 public:
  explicit TextEncoderImpl(const TextShape& shape);
  // prompts (B, L, W) token embeddings; eot (B) int64 positions of the end token -> (B, D).
  torch::Tensor forward(const torch::Tensor& prompts, const torch::Tensor& eot);

  torch::Tensor positional_embedding, text_projection;
  Transformer transformer{nullptr};
  torch::nn::LayerNorm ln_final{nullptr};

 private:
  torch::Tensor mask_;  // (L, L): 0 on and below the diagonal, -inf above (not a buffer)
};
TORCH_MODULE(TextEncoder);

struct ClipShape {
  VisionShape vision;
  TextShape text;
};

// OpenAI's CLIP with its state-dict names (visual.*, token_embedding, positional_embedding,
// transformer.*, ln_final, text_projection, logit_scale). The text modules are shared with a
// TextEncoder view so that CLIP-ReID's names can be produced from the same tensors.
class ClipImpl : public torch::nn::Module {
 public:
  explicit ClipImpl(const ClipShape& shape);
  torch::Tensor EncodeImage(const torch::Tensor& images);  // (B, 3, height, width) -> (B, D)
  torch::Tensor EncodeText(const torch::Tensor& tokens);   // (B, L) int64 -> (B, D)
  const ClipShape& shape() const { return shape_; }

  VisionTransformer visual{nullptr};
  torch::nn::Embedding token_embedding{nullptr};
  torch::Tensor positional_embedding, text_projection, logit_scale;
  Transformer transformer{nullptr};
  torch::nn::LayerNorm ln_final{nullptr};

 private:
  ClipShape shape_;
  torch::Tensor mask_;
};
TORCH_MODULE(Clip);

// Parameter count of a module (every parameter, trainable or not).
int64_t CountParameters(const torch::nn::Module& m);

}  // namespace reid::model
