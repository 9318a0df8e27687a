// BuildReidModel: the ReID model from the config and, when given, OpenAI CLIP weights or a ReID
// state dict (CLIP-ReID's names), with the CLIP shape inferred from the checkpoint.
#include "trainer/model/reid_model.h"

namespace reid::model {
namespace {

enum class WeightsKind { kNone, kOpenAiClip, kReid };

// The CLIP shape the config asks for (random init); vision grid at the pre-training size.
ClipShape ConfigClipShape(const proto::ModelConfig& m) {
  ClipShape s;
  s.vision.width = m.vision_width();
  s.vision.layers = m.vision_layers();
  s.vision.heads = m.vision_heads() > 0 ? m.vision_heads() : std::max(1, m.vision_width() / 64);
  s.vision.patch = s.vision.stride = m.vision_patch_size();
  s.vision.grid_h = s.vision.grid_w = m.pretrain_image_size() / m.vision_patch_size();
  s.vision.output_dim = m.embed_dim();
  s.text.context_length = m.context_length();
  s.text.vocab_size = m.vocab_size();
  s.text.width = m.transformer_width();
  s.text.heads = m.transformer_heads();
  s.text.layers = m.transformer_layers();
  s.text.output_dim = m.embed_dim();
  return s;
}

int64_t LayerCount(const StateDict& sd, const std::string& prefix) {
  std::set<std::string> ids;
  for (const auto& [k, v] : sd) {
    if (k.rfind(prefix, 0) == 0)
      ids.insert(k.substr(prefix.size(), k.find('.', prefix.size()) - prefix.size()));
  }
  return static_cast<int64_t>(ids.size());
}

// Heads cannot be read from weights: the config's when its width equals the checkpoint's (0 =
// width / 64), else build_model's width / 64.
void ApplyConfigHeads(const proto::ModelConfig& m, ClipShape* s) {
  s->vision.heads = (s->vision.width == m.vision_width() && m.vision_heads() > 0)
                        ? m.vision_heads()
                        : std::max<int64_t>(1, s->vision.width / 64);
  s->text.heads = s->text.width == m.transformer_width() ? m.transformer_heads()
                                                         : std::max<int64_t>(1, s->text.width / 64);
}

// The shape of a ReID state dict (image_encoder.*, text_encoder.*); heads from the config when
// the widths agree with it, else width / 64.
StatusOr<ClipShape> InferReidShape(const StateDict& sd, const proto::ModelConfig& m) {
  for (const char* k : {"image_encoder.conv1.weight", "image_encoder.proj",
                        "text_encoder.positional_embedding", "text_encoder.text_projection"}) {
    if (!sd.count(k))
      return Status::InvalidArgument(std::string("ReID state dict without key '") + k + "'");
  }
  ClipShape shape = ConfigClipShape(m);
  ClipShape* s = &shape;
  const auto& conv = sd.at("image_encoder.conv1.weight");
  s->vision.width = conv.size(0);
  s->vision.patch = s->vision.stride = conv.size(-1);
  s->vision.layers = LayerCount(sd, "image_encoder.transformer.resblocks.");
  s->vision.output_dim = sd.at("image_encoder.proj").size(1);
  const auto& pos = sd.at("text_encoder.positional_embedding");
  s->text.context_length = pos.size(0);
  s->text.width = pos.size(1);
  s->text.layers = LayerCount(sd, "text_encoder.transformer.resblocks.");
  s->text.output_dim = sd.at("text_encoder.text_projection").size(1);
  ApplyConfigHeads(m, s);
  return shape;
}

}  // namespace

StatusOr<ReidModel> BuildReidModel(const proto::ReidConfig& cfg, int64_t num_classes,
                                   int64_t num_cameras) {
  const auto& m = cfg.model();
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer,
                        Tokenizer::Create(m.bpe_vocab()));
  StateDict sd;
  ClipShape clip_shape = ConfigClipShape(m);
  WeightsKind kind = WeightsKind::kNone;
  if (!m.weights().empty()) {
    REID_ASSIGN_OR_RETURN(sd, ReadStateDict(m.weights()));
    if (sd.count("visual.proj")) {
      kind = WeightsKind::kOpenAiClip;
      REID_ASSIGN_OR_RETURN(clip_shape, InferClipShape(sd));
      ApplyConfigHeads(m, &clip_shape);
    } else if (sd.count("image_encoder.proj")) {
      kind = WeightsKind::kReid;
      REID_ASSIGN_OR_RETURN(clip_shape, InferReidShape(sd, m));
    } else {
      return Status::InvalidArgument(
          "model.weights = '" + m.weights() +
          "': neither OpenAI CLIP (no key visual.proj) nor a ReID model (no key "
          "image_encoder.proj)");
    }
  }
  ReidShape shape;
  shape.num_classes = num_classes;
  shape.num_cameras = num_cameras;
  shape.vision = clip_shape.vision;
  shape.vision.stride = m.stride_size();
  std::tie(shape.vision.grid_h, shape.vision.grid_w) =
      PatchGrid(cfg.input().size_train().height(), cfg.input().size_train().width(),
                shape.vision.patch, shape.vision.stride);
  shape.text = clip_shape.text;
  if (kind != WeightsKind::kReid && tokenizer->vocab_size() != shape.text.vocab_size) {
    return Status::InvalidArgument(
        "model.bpe_vocab gives " + std::to_string(tokenizer->vocab_size()) +
        " token ids but the text encoder has " + std::to_string(shape.text.vocab_size) +
        " (model.vocab_size or the weights)");
  }
  REID_ASSIGN_OR_RETURN(const PromptTemplate tmpl,
                        BuildPromptTemplate(*tokenizer, cfg.prompt().template_(),
                                            cfg.prompt().n_ctx(), shape.text.context_length));
  torch::NoGradGuard no_grad;
  if (kind == WeightsKind::kReid) {
    auto blank = torch::zeros({1, shape.text.context_length, shape.text.width});  // (1, L, W_text)
    ReidModel model(cfg, shape, tmpl, blank);
    REID_RETURN_IF_ERROR(LoadStateDict(*model, sd, m.weights()));
    return model;
  }
  if (kind == WeightsKind::kNone) {  // random init: positional embedding at the training grid
    clip_shape.vision.grid_h = shape.vision.grid_h;
    clip_shape.vision.grid_w = shape.vision.grid_w;
  }
  clip_shape.vision.stride = shape.vision.stride;
  Clip clip(clip_shape);
  if (kind == WeightsKind::kOpenAiClip) {
    REID_RETURN_IF_ERROR(LoadStateDict(*clip, sd, m.weights(),
                                       {"input_resolution", "context_length", "vocab_size"}));
  }
  auto ids = torch::tensor(tmpl.tokens, torch::kLong).unsqueeze(0);
  ReidModel model(cfg, shape, tmpl, clip->token_embedding(ids));
  model->LoadFromClip(*clip);
  return model;
}

}  // namespace reid::model
