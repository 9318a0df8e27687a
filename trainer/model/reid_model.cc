// The ReID model (CLIP-ReID's build_transformer + the paper's modules) and its construction.
#include "trainer/model/reid_model.h"

namespace reid::model {
namespace {

torch::nn::BatchNorm1d FrozenBiasNeck(int64_t width) {
  torch::nn::BatchNorm1d bn(width);
  bn->bias.requires_grad_(false);  // CLIP-ReID: bias frozen at zero
  return bn;
}

torch::nn::Linear Classifier(int64_t in, int64_t classes, double std) {
  torch::nn::Linear fc(torch::nn::LinearOptions(in, classes).bias(false));
  torch::NoGradGuard no_grad;
  fc->weight.normal_(0, std);
  return fc;
}

}  // namespace

ReidModelImpl::ReidModelImpl(const proto::ReidConfig& cfg, const ReidShape& shape,
                             const PromptTemplate& tmpl, const torch::Tensor& template_embedding)
    : shape_(shape), tmpl_(tmpl) {
  const auto& m = cfg.model();
  const int64_t w = shape.vision.width, e = shape.vision.output_dim;
  image_encoder = register_module("image_encoder", VisionTransformer(shape.vision));
  text_encoder = register_module("text_encoder", TextEncoder(shape.text));
  prompt_learner = register_module(
      "prompt_learner",
      PromptLearner(tmpl, template_embedding, shape.num_classes, cfg.prompt().ctx_init_std()));
  bottleneck = register_module("bottleneck", FrozenBiasNeck(w));
  bottleneck_proj = register_module("bottleneck_proj", FrozenBiasNeck(e));
  classifier =
      register_module("classifier", Classifier(w, shape.num_classes, m.classifier_init_std()));
  classifier_proj =
      register_module("classifier_proj", Classifier(e, shape.num_classes, m.classifier_init_std()));
  if (m.sie_camera()) {
    CHECK_GT(shape.num_cameras, 0) << "SIE needs the number of cameras";
    // timm's trunc_normal_(std=.02) with bounds +-2: effectively untruncated.
    cv_embed =
        register_parameter("cv_embed", (torch::randn({shape.num_cameras, w}) * 0.02).clamp(-2, 2));
    sie_coe_ = m.sie_coe();
  }
  if (cfg.context_adjust().enabled()) {
    const int64_t hidden =
        cfg.context_adjust().hidden_dim() > 0 ? cfg.context_adjust().hidden_dim() : 2 * e;
    context_adjust = register_module(
        "context_adjust", ContextAdjust(shape.text.output_dim, hidden, shape.text.width));
  }
  if (cfg.cross_attention().enabled()) {
    const auto& x = cfg.cross_attention();
    cross_attention = register_module(
        "cross_attention",
        CrossModalAttention(shape.text.output_dim, x.num_heads(),
                            x.hidden_dim() > 0 ? x.hidden_dim() : shape.text.output_dim,
                            x.literal_unscaled()));
  }
  neck_after_ = m.neck_feat() == proto::ModelConfig::AFTER;
}

bool ReidModelImpl::TrainsInStage(const std::string& name, int stage) {
  auto under = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
  if (stage == 1) return under("prompt_learner.cls_ctx") || under("context_adjust.");
  return !under("text_encoder.") && !under("prompt_learner.") && !under("context_adjust.") &&
         name != "bottleneck.bias" && name != "bottleneck_proj.bias";
}

void ReidModelImpl::SetTrainable(int stage) {
  for (auto& p : named_parameters()) {
    p.value().requires_grad_(TrainsInStage(p.key(), stage));
    p.value().mutable_grad() = torch::Tensor();
  }
}

VisionOutputs ReidModelImpl::EncodeImage(const torch::Tensor& images, const torch::Tensor& cams) {
  torch::Tensor cv;
  if (cv_embed.defined()) {
    CHECK(cams.defined()) << "SIE is on: camera ids are required";
    cv = sie_coe_ * cv_embed.index_select(0, cams.to(torch::kLong));  // (B, W)
  }
  return image_encoder(images, cv);
}

ReidTrainOutputs ReidModelImpl::ForwardTrain(const torch::Tensor& images,
                                             const torch::Tensor& cams) {
  VisionOutputs v = EncodeImage(images, cams);
  ReidTrainOutputs o;
  o.score = classifier(bottleneck(v.cls));
  o.score_proj = classifier_proj(bottleneck_proj(v.cls_proj));
  o.feat_last = v.cls_last;
  o.feat = v.cls;
  o.feat_proj = v.cls_proj;
  return o;
}

torch::Tensor ReidModelImpl::InferenceFeature(const torch::Tensor& images,
                                              const torch::Tensor& cams) {
  VisionOutputs v = EncodeImage(images, cams);
  if (neck_after_) return torch::cat({bottleneck(v.cls), bottleneck_proj(v.cls_proj)}, 1);
  return torch::cat({v.cls, v.cls_proj}, 1);  // (B, W + D)
}

torch::Tensor ReidModelImpl::EncodeText(const torch::Tensor& labels,
                                        const torch::Tensor& image_features) {
  torch::Tensor adjust;
  if (has_context_adjust()) {
    CHECK(image_features.defined()) << "the context adjustment network needs image features";
    adjust = context_adjust(image_features);  // (B, W_text)
  }
  auto prompts = prompt_learner(labels, adjust);  // (B, L, W_text)
  return text_encoder(prompts, prompt_learner->EotPositions(labels.size(0)));
}

torch::Tensor ReidModelImpl::ImageTextLogits(const torch::Tensor& image_proj,
                                             const torch::Tensor& text) {
  if (has_cross_attention()) return cross_attention->Logits(image_proj, text);
  return torch::matmul(image_proj, text.t());  // (B, M)
}

void ReidModelImpl::LoadFromClip(ClipImpl& clip) {
  torch::NoGradGuard no_grad;
  const VisionShape& from = clip.visual->shape();
  StateDict vis = ModuleStateDict(*clip.visual);
  vis["positional_embedding"] =
      ResizePositionalEmbedding(vis["positional_embedding"], from.grid_h, from.grid_w,
                                shape_.vision.grid_h, shape_.vision.grid_w);
  const Status vis_loaded = LoadStateDict(*image_encoder, vis, "CLIP visual");
  CHECK(vis_loaded.ok()) << vis_loaded.message();
  StateDict text;
  for (const auto& [k, v] : ModuleStateDict(clip)) {
    if (k.rfind("transformer.", 0) == 0 || k.rfind("ln_final.", 0) == 0 ||
        k == "positional_embedding" || k == "text_projection") {
      text[k] = v;
    }
  }
  const Status text_loaded = LoadStateDict(*text_encoder, text, "CLIP text");
  CHECK(text_loaded.ok()) << text_loaded.message();
  auto ids = torch::tensor(tmpl_.tokens, torch::kLong).unsqueeze(0);
  auto emb = clip.token_embedding(ids);  // (1, L, W_text)
  prompt_learner->token_prefix.copy_(emb.slice(1, 0, tmpl_.ctx_start));
  prompt_learner->token_suffix.copy_(emb.slice(1, tmpl_.ctx_start + tmpl_.n_ctx));
}

}  // namespace reid::model
