// The ReID model of CLIP-ReID plus the paper's modules: image encoder (with SIE), text encoder,
// prompt learner, optional context adjustment network and cross-modal attention, BN necks and
// bias-free classifiers. Built from proto::ReidConfig with CLIP weights, a ReID checkpoint or
// random init. Shape letters as defined in clip.h (here W is the vision transformer's width).
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "base/torch_glog.h"
#include "proto/reid_config.pb.h"
#include "trainer/model/clip.h"
#include "trainer/model/prompt.h"
#include "trainer/model/tokenizer.h"
#include "trainer/model/weights.h"

namespace reid::model {

struct ReidShape {
  VisionShape vision;  // grid = training grid, stride from the config
  TextShape text;
  int64_t num_classes = 0, num_cameras = 0;
};

struct ReidTrainOutputs {
  torch::Tensor score, score_proj;           // (B, C) from classifier / classifier_proj
  torch::Tensor feat_last, feat, feat_proj;  // (B, W), (B, W), (B, D): the triplet features
};

class ReidModelImpl : public torch::nn::Module {
 public:
  ReidModelImpl(const proto::ReidConfig& cfg, const ReidShape& shape, const PromptTemplate& tmpl,
                const torch::Tensor& template_embedding);

  // cams (B) 0-based camera ids, used when SIE is on (may be undefined otherwise).
  VisionOutputs EncodeImage(const torch::Tensor& images, const torch::Tensor& cams = {});
  // Stage 2 forward: classifier scores and features (BN necks in the module's mode).
  ReidTrainOutputs ForwardTrain(const torch::Tensor& images, const torch::Tensor& cams = {});
  // Inference feature (B, W + D): concat before the BN necks (1280-d for ViT-B/16), or after
  // them with model.neck_feat AFTER. Not normalised.
  torch::Tensor InferenceFeature(const torch::Tensor& images, const torch::Tensor& cams = {});
  // Text features (B, D) of the prompts of `labels`; image_features (B, D) feed g when it is on.
  torch::Tensor EncodeText(const torch::Tensor& labels, const torch::Tensor& image_features = {});
  // Image-text logits (B, M) of image_proj (B, D) and text (M, D): through the cross-modal
  // attention when on, else I T^T.
  torch::Tensor ImageTextLogits(const torch::Tensor& image_proj, const torch::Tensor& text);
  // Copies CLIP's weights (image encoder with the grid resized; text encoder; prompt embeddings).
  void LoadFromClip(ClipImpl& clip);

  // Whether the parameter `name` (as named_parameters() gives it) trains in `stage`, as CLIP-ReID
  // splits the model: stage 1 learns the prompts' context tokens (prompt_learner.cls_ctx) and the
  // context adjustment network g; stage 2 everything else except the text side (text encoder,
  // prompt learner, g) and the BN necks' biases, which stay frozen at zero.
  static bool TrainsInStage(const std::string& name, int stage);
  // Sets requires_grad of every parameter as TrainsInStage(name, stage) says and drops its
  // gradient.
  void SetTrainable(int stage);

  const ReidShape& shape() const { return shape_; }
  bool has_context_adjust() const { return !context_adjust.is_empty(); }
  bool has_cross_attention() const { return !cross_attention.is_empty(); }
  double sie_coe() const { return sie_coe_; }     // SIE scale (0 without SIE)
  bool neck_after() const { return neck_after_; }  // inference feature after the BN necks

  VisionTransformer image_encoder{nullptr};
  TextEncoder text_encoder{nullptr};
  PromptLearner prompt_learner{nullptr};
  torch::nn::BatchNorm1d bottleneck{nullptr}, bottleneck_proj{nullptr};
  torch::nn::Linear classifier{nullptr}, classifier_proj{nullptr};
  torch::Tensor cv_embed;  // (num_cameras, W) when SIE is on: one row per camera id
  ContextAdjust context_adjust{nullptr};
  CrossModalAttention cross_attention{nullptr};

 private:
  ReidShape shape_;
  PromptTemplate tmpl_;
  double sie_coe_ = 0;
  bool neck_after_ = false;
};
TORCH_MODULE(ReidModel);

// Builds the model of `cfg`: model.weights may be an OpenAI CLIP checkpoint (shape inferred,
// positional embedding resized to the training grid, stride from the config), a ReID state dict
// of this model or CLIP-ReID (loaded by name, all keys checked), or empty (random init at the
// training grid with the config's shape). Attention heads come from the config when its widths
// equal the checkpoint's, else width / 64. A user error (bad weights, vocabulary or prompt) is a
// Status naming the config field or file.
StatusOr<ReidModel> BuildReidModel(const proto::ReidConfig& cfg, int64_t num_classes,
                                   int64_t num_cameras);

// What BuildReidModel takes from files, checked without building the model (a training run calls
// it before reading its dataset): model.weights (when set) reads as weights whose CLIP shape is
// the config's (vision_width, vision_layers, vision_patch_size, embed_dim, context_length,
// vocab_size, transformer_width, transformer_layers; InvalidArgument listing each difference),
// and model.bpe_vocab (when set) reads and gives as many token ids as the text encoder has (not
// checked for a ReID state dict, which stores its prompt embedding). Reads both files in full;
// the statuses of ReadStateDict and Tokenizer::Create for files that do not read.
Status CheckModelFiles(const proto::ModelConfig& m);

}  // namespace reid::model
