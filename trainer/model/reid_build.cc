// BuildReidModel: the ReID model from the config and, when given, OpenAI CLIP weights or a ReID
// state dict (CLIP-ReID's names), with the CLIP shape inferred from the checkpoint; and
// CheckModelFiles, the same reading of the weights and vocabulary without building anything.
#include "trainer/model/reid_model.h"

#include <string>
#include <vector>

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

// model.weights read and recognised, with the CLIP shape it holds (the config's when empty).
struct Weights {
  WeightsKind kind = WeightsKind::kNone;
  StateDict sd;
  ClipShape shape;
};

StatusOr<Weights> ReadWeights(const proto::ModelConfig& m) {
  Weights w;
  w.shape = ConfigClipShape(m);
  if (m.weights().empty()) return w;
  REID_ASSIGN_OR_RETURN(w.sd, ReadStateDict(m.weights()));
  const std::string field = "model.weights = '" + m.weights() + "'";
  if (w.sd.count("visual.proj")) {
    w.kind = WeightsKind::kOpenAiClip;
    StatusOr<ClipShape> shape = InferClipShape(w.sd);
    if (!shape.ok()) return shape.status().Annotate(field);
    w.shape = *shape;
    ApplyConfigHeads(m, &w.shape);
  } else if (w.sd.count("image_encoder.proj")) {
    w.kind = WeightsKind::kReid;
    StatusOr<ClipShape> shape = InferReidShape(w.sd, m);
    if (!shape.ok()) return shape.status().Annotate(field);
    w.shape = *shape;
  } else {
    return Status::InvalidArgument(field +
                                   ": neither OpenAI CLIP (no key visual.proj) nor a ReID model "
                                   "(no key image_encoder.proj)");
  }
  return w;
}

// The model fields whose value differs from the weights' shape, as "vision_width 1024 (config
// 768)". Heads are not stored in weights and the grid follows the training input, so neither is
// compared.
std::vector<std::string> ShapeDifferences(const proto::ModelConfig& m, const ClipShape& w) {
  std::vector<std::string> out;
  auto compare = [&out](const char* field, int64_t in_weights, int64_t in_config) {
    if (in_weights != in_config) {
      out.push_back(std::string(field) + " " + std::to_string(in_weights) + " (config " +
                    std::to_string(in_config) + ")");
    }
  };
  compare("vision_width", w.vision.width, m.vision_width());
  compare("vision_layers", w.vision.layers, m.vision_layers());
  compare("vision_patch_size", w.vision.patch, m.vision_patch_size());
  compare("embed_dim", w.vision.output_dim, m.embed_dim());
  if (w.text.output_dim != w.vision.output_dim) {
    compare("embed_dim (text side)", w.text.output_dim, m.embed_dim());
  }
  compare("context_length", w.text.context_length, m.context_length());
  compare("vocab_size", w.text.vocab_size, m.vocab_size());
  compare("transformer_width", w.text.width, m.transformer_width());
  compare("transformer_layers", w.text.layers, m.transformer_layers());
  return out;
}

// The tokenizer's ids against the text encoder's token embedding rows (`vocab_size`, from the
// config or the weights, which `source` names with its verb: "model.vocab_size is").
Status CheckVocabulary(const proto::ModelConfig& m, const Tokenizer& tokenizer, int64_t vocab_size,
                       const std::string& source) {
  if (tokenizer.vocab_size() == vocab_size) return Status::Ok();
  const std::string vocab =
      m.bpe_vocab().empty()
          ? "model.bpe_vocab is empty: the byte-level tokenizer gives " +
                std::to_string(tokenizer.vocab_size()) + " token ids"
          : "model.bpe_vocab = '" + m.bpe_vocab() + "' gives " +
                std::to_string(tokenizer.vocab_size()) + " token ids";
  return Status::InvalidArgument(vocab + " but " + source + " " + std::to_string(vocab_size) +
                                 (m.bpe_vocab().empty()
                                      ? " (name CLIP's merges file bpe_simple_vocab_16e6.txt.gz "
                                        "in model.bpe_vocab, or set model.vocab_size: 514)"
                                      : ""));
}

std::string VocabSource(const proto::ModelConfig& m, WeightsKind kind) {
  return kind == WeightsKind::kOpenAiClip
             ? "the text encoder of model.weights '" + m.weights() + "' has"
             : std::string("model.vocab_size is");
}

}  // namespace

Status CheckModelFiles(const proto::ModelConfig& m) {
  REID_ASSIGN_OR_RETURN(const Weights w, ReadWeights(m));
  if (w.kind != WeightsKind::kNone) {
    const std::vector<std::string> diff = ShapeDifferences(m, w.shape);
    if (!diff.empty()) {
      std::string list;
      for (const std::string& d : diff) list += (list.empty() ? "" : ", ") + d;
      return Status::InvalidArgument("model.weights = '" + m.weights() +
                                     "' does not fit the config's model: the weights have " +
                                     list + "; set those model fields or name other weights");
    }
  }
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer,
                        Tokenizer::Create(m.bpe_vocab()));
  if (w.kind == WeightsKind::kReid) return Status::Ok();  // its prompt embedding is stored
  return CheckVocabulary(m, *tokenizer, w.shape.text.vocab_size, VocabSource(m, w.kind));
}

StatusOr<ReidModel> BuildReidModel(const proto::ReidConfig& cfg, int64_t num_classes,
                                   int64_t num_cameras) {
  const auto& m = cfg.model();
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer,
                        Tokenizer::Create(m.bpe_vocab()));
  REID_ASSIGN_OR_RETURN(Weights weights, ReadWeights(m));
  const StateDict& sd = weights.sd;
  ClipShape clip_shape = weights.shape;
  const WeightsKind kind = weights.kind;
  ReidShape shape;
  shape.num_classes = num_classes;
  shape.num_cameras = num_cameras;
  shape.vision = clip_shape.vision;
  shape.vision.stride = m.stride_size();
  std::tie(shape.vision.grid_h, shape.vision.grid_w) =
      PatchGrid(cfg.input().size_train().height(), cfg.input().size_train().width(),
                shape.vision.patch, shape.vision.stride);
  shape.text = clip_shape.text;
  if (kind != WeightsKind::kReid) {
    REID_RETURN_IF_ERROR(
        CheckVocabulary(m, *tokenizer, shape.text.vocab_size, VocabSource(m, kind)));
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
