// The inference model (image encoder + BN necks + neck feature), its construction from a
// checkpoint alone, the test-time config overrides, and the sharded feature extraction.
#include "trainer/eval/inference_model.h"

#include <algorithm>
#include <set>

#include "data/batch_tensor.h"
#include "data/loader.h"
#include "data/options.h"
#include "data/sampler.h"
#include "proto/config.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/shard.h"

namespace reid::trainer {
namespace {

torch::nn::BatchNorm1d Neck(int64_t width) {
  torch::nn::BatchNorm1d bn(width);
  bn->bias.requires_grad_(false);
  return bn;
}

int64_t CountLayers(const model::StateDict& sd, const std::string& prefix) {
  std::set<std::string> ids;
  for (const auto& [k, v] : sd) {
    if (k.rfind(prefix, 0) == 0)
      ids.insert(k.substr(prefix.size(), k.find('.', prefix.size()) - prefix.size()));
  }
  return static_cast<int64_t>(ids.size());
}

// The vision shape of the image_encoder.* tensors, with heads and stride from the config and the
// grid that the positional embedding holds (checked against size_train's grid).
StatusOr<model::VisionShape> VisionShapeOf(const model::StateDict& sd, const proto::ReidConfig& cfg,
                                           const std::string& source) {
  for (const char* k :
       {"image_encoder.conv1.weight", "image_encoder.proj", "image_encoder.positional_embedding"}) {
    if (!sd.count(k)) return Status::InvalidArgument(source + ": no tensor '" + k + "'");
  }
  const torch::Tensor& conv = sd.at("image_encoder.conv1.weight");         // (W, 3, patch, patch)
  const torch::Tensor& proj = sd.at("image_encoder.proj");                 // (W, D)
  const torch::Tensor& pos = sd.at("image_encoder.positional_embedding");  // (1 + N, W)
  if (conv.dim() != 4 || conv.size(1) != 3 || conv.size(2) != conv.size(3) || proj.dim() != 2 ||
      proj.size(0) != conv.size(0) || pos.dim() != 2 || pos.size(1) != conv.size(0)) {
    return Status::InvalidArgument(source + ": image_encoder tensors of inconsistent shapes");
  }
  model::VisionShape v;
  v.width = conv.size(0);
  v.patch = conv.size(2);
  v.stride = cfg.model().stride_size();
  v.layers = CountLayers(sd, "image_encoder.transformer.resblocks.");
  v.output_dim = proj.size(1);
  v.heads = (v.width == cfg.model().vision_width() && cfg.model().vision_heads() > 0)
                ? cfg.model().vision_heads()
                : std::max<int64_t>(1, v.width / 64);
  if (v.layers == 0 || v.width % v.heads != 0) {
    return Status::InvalidArgument(source + ": image_encoder has " + std::to_string(v.layers) +
                                   " blocks of width " + std::to_string(v.width) + " for " +
                                   std::to_string(v.heads) + " heads");
  }
  const auto& train = cfg.input().size_train();
  std::tie(v.grid_h, v.grid_w) = model::PatchGrid(train.height(), train.width(), v.patch, v.stride);
  if (pos.size(0) != 1 + v.grid_h * v.grid_w) {
    return Status::InvalidArgument(
        source + ": image_encoder.positional_embedding has " + std::to_string(pos.size(0)) +
        " rows but input.size_train " + std::to_string(train.height()) + "x" +
        std::to_string(train.width()) + " with stride " + std::to_string(v.stride) + " gives " +
        std::to_string(1 + v.grid_h * v.grid_w));
  }
  return v;
}

}  // namespace

InferenceModelImpl::InferenceModelImpl(const model::VisionShape& vision, int64_t num_cameras,
                                       double sie_coe, bool neck_after)
    : vision_(vision), sie_coe_(sie_coe), neck_after_(neck_after) {
  image_encoder = register_module("image_encoder", model::VisionTransformer(vision));
  bottleneck = register_module("bottleneck", Neck(vision.width));
  bottleneck_proj = register_module("bottleneck_proj", Neck(vision.output_dim));
  if (num_cameras > 0) {
    cv_embed = register_parameter("cv_embed", torch::zeros({num_cameras, vision.width}));
  }
}

InferenceModelImpl::InferenceModelImpl(model::VisionTransformer image_encoder_in,
                                       torch::nn::BatchNorm1d bottleneck_in,
                                       torch::nn::BatchNorm1d bottleneck_proj_in,
                                       torch::Tensor cv_embed_in, double sie_coe, bool neck_after)
    : vision_(image_encoder_in->shape()), sie_coe_(sie_coe), neck_after_(neck_after) {
  image_encoder = register_module("image_encoder", std::move(image_encoder_in));
  bottleneck = register_module("bottleneck", std::move(bottleneck_in));
  bottleneck_proj = register_module("bottleneck_proj", std::move(bottleneck_proj_in));
  if (cv_embed_in.defined()) {  // shared: its requires_grad stays the trainer's
    cv_embed = register_parameter("cv_embed", cv_embed_in, cv_embed_in.requires_grad());
  }
}

torch::Tensor InferenceModelImpl::forward(const torch::Tensor& images, const torch::Tensor& cams) {
  torch::Tensor cv;
  if (cv_embed.defined()) {
    CHECK(cams.defined()) << "SIE is on: camera ids are required";
    cv = sie_coe_ * cv_embed.index_select(0, cams.to(torch::kLong));  // (B, W)
  }
  model::VisionOutputs v = image_encoder(images, cv);
  if (neck_after_) return torch::cat({bottleneck(v.cls), bottleneck_proj(v.cls_proj)}, 1);
  return torch::cat({v.cls, v.cls_proj}, 1);  // (B, W + D)
}

StatusOr<InferenceModel> BuildInferenceModel(const model::StateDict& sd,
                                             const proto::ReidConfig& cfg,
                                             const std::string& source) {
  REID_ASSIGN_OR_RETURN(model::VisionShape vision, VisionShapeOf(sd, cfg, source));
  int64_t cameras = 0;
  if (cfg.model().sie_camera()) {
    auto it = sd.find("cv_embed");
    if (it == sd.end() || it->second.dim() != 2 || it->second.size(1) != vision.width) {
      return Status::InvalidArgument(source +
                                     ": model.sie_camera is on but there is no cv_embed "
                                     "of width " +
                                     std::to_string(vision.width));
    }
    cameras = it->second.size(0);
  }
  InferenceModel m(vision, cameras, cfg.model().sie_coe(),
                   cfg.model().neck_feat() == proto::ModelConfig::AFTER);
  model::StateDict mine;
  for (const auto& [k, v] : sd) {
    if (k.rfind("image_encoder.", 0) == 0 || k.rfind("bottleneck.", 0) == 0 ||
        k.rfind("bottleneck_proj.", 0) == 0 || (k == "cv_embed" && cameras > 0)) {
      mine[k] = v;
    }
  }
  REID_RETURN_IF_ERROR(model::LoadStateDict(*m, mine, source));
  const auto& test = cfg.input().size_test();
  const auto [gh, gw] = model::PatchGrid(test.height(), test.width(), vision.patch, vision.stride);
  if (gh != vision.grid_h || gw != vision.grid_w) {
    if (gh < 1 || gw < 1) {
      return Status::InvalidArgument("input.size_test " + std::to_string(test.height()) + "x" +
                                     std::to_string(test.width()) + " is smaller than a patch");
    }
    m->image_encoder->ResizeGrid(gh, gw);
  }
  m->eval();
  return m;
}

StatusOr<InferenceCheckpoint> OpenCheckpoint(const std::string& checkpoint) {
  InferenceCheckpoint c;
  REID_ASSIGN_OR_RETURN(c.path, ResolveCheckpoint(checkpoint));
  REID_RETURN_IF_ERROR(VerifyCheckpoint(c.path, &c.meta));
  if (!c.meta.has_config()) {
    return Status::InvalidArgument(c.path + "/meta.pb: no config (the model's shape is unknown)");
  }
  c.config = c.meta.config();
  REID_ASSIGN_OR_RETURN(const std::string bytes, ReadCheckpointFile(c.path, c.meta, "model.pt"));
  REID_ASSIGN_OR_RETURN(const NamedTensors tensors,
                        DeserializeTensors(bytes, c.path + "/model.pt"));
  for (const auto& [name, t] : tensors) {
    if (!c.tensors.emplace(name, t).second)
      return Status::DataLoss(c.path + "/model.pt: tensor '" + name + "' appears twice");
  }
  return c;
}

Status ApplyTestTimeOverrides(const proto::ReidConfig* user, const std::vector<std::string>& set,
                              proto::ReidConfig* cfg) {
  proto::ReidConfig base = *cfg;
  if (user != nullptr) {
    *base.mutable_eval() = user->eval();
    *base.mutable_data() = user->data();
    *base.mutable_input()->mutable_size_test() = user->input().size_test();
  }
  proto::ReidConfig merged;
  const config::Problems problems =
      config::LoadFromText(config::ToText(base), "the checkpoint's config", set, &merged);
  if (!problems.empty()) {
    std::string text = "invalid config after the overrides:";
    for (const std::string& p : problems) text += " " + p + ";";
    return Status::InvalidArgument(text);
  }
  // What the trained weights fix may not change at test time.
  const std::vector<std::pair<const char*, bool>> fixed = {
      {"model", merged.model().SerializeAsString() == base.model().SerializeAsString()},
      {"prompt", merged.prompt().SerializeAsString() == base.prompt().SerializeAsString()},
      {"input.size_train", merged.input().size_train().SerializeAsString() ==
                               base.input().size_train().SerializeAsString()},
  };
  for (const auto& [name, same] : fixed) {
    if (!same) {
      return Status::InvalidArgument(std::string("--set changes ") + name +
                                     ", which the checkpoint's weights fix (test-time overrides "
                                     "are eval.*, data.*, input.* but size_train)");
    }
  }
  *cfg = merged;
  return Status::Ok();
}

torch::Tensor ExtractBatchedFeatures(const BatchFeatureFn& fn, int64_t dim,
                                     const proto::ReidConfig& cfg,
                                     const std::vector<data::Sample>& samples,
                                     dist::Communicator* comm, const torch::Device& device,
                                     const std::function<bool(int64_t round)>& stop,
                                     int64_t* unreadable) {
  torch::NoGradGuard no_grad;
  const int rank = comm != nullptr ? comm->rank() : 0;
  const int world = comm != nullptr ? comm->size() : 1;
  const int64_t n = static_cast<int64_t>(samples.size());
  const int batch = cfg.data().test_batch_size();
  const auto& size = cfg.input().size_test();
  data::Loader loader(&samples, data::TransformOptionsFromConfig(cfg.input(), false),
                      data::LoaderOptionsFromConfig(cfg), data::TorchBufferAllocator());
  const dist::ShardRange shard = dist::InferenceShard(n, rank, world);
  std::vector<data::BatchPlan> plans = data::InferencePlans(shard.begin, shard.end, batch);
  // Every rank polls `stop` as often as the largest shard has batches (collectives match).
  int64_t max_shard = 0;
  for (int64_t c : dist::InferenceShardCounts(n, world)) max_shard = std::max(max_shard, c);
  const int64_t rounds = (max_shard + batch - 1) / batch;
  loader.StartEpoch(0, plans);
  std::vector<torch::Tensor> parts;
  data::Batch b;
  bool stopped = false;
  for (int64_t r = 0; r < rounds; ++r) {
    if (r < static_cast<int64_t>(plans.size()) && loader.Next(&b)) {
      data::TensorBatch t = data::ToTensors(b, size.height(), size.width());
      torch::Tensor f = fn(t.images.to(device), t.camids.to(device));  // (B, dim)
      parts.push_back(f.to(torch::kCPU, torch::kFloat32));
    }
    if (stop && stop(r)) {
      stopped = true;
      break;
    }
  }
  if (unreadable != nullptr) *unreadable = loader.unreadable_count();
  if (stopped) return {};
  torch::Tensor mine = parts.empty() ? torch::zeros({0, dim}) : torch::cat(parts);
  return world > 1 ? comm->AllGatherV(mine) : mine;  // (N, dim) in sample order
}

torch::Tensor ExtractInferenceFeatures(InferenceModel& model, const proto::ReidConfig& cfg,
                                       const std::vector<data::Sample>& samples, bool flip,
                                       dist::Communicator* comm, const torch::Device& device,
                                       const std::function<bool(int64_t round)>& stop,
                                       int64_t* unreadable) {
  const bool was_training = model->is_training();
  model->eval();
  const bool sie = model->cv_embed.defined();
  auto fn = [&](const torch::Tensor& images, const torch::Tensor& cams) {
    const torch::Tensor c = sie ? cams : torch::Tensor();
    torch::Tensor f = model->forward(images, c);                  // (B, W + D)
    if (flip) f = (f + model->forward(images.flip({3}), c)) / 2;  // fast-reid's flip test
    return f;
  };
  torch::Tensor f = ExtractBatchedFeatures(fn, model->feature_dim(), cfg, samples, comm, device,
                                           stop, unreadable);
  model->train(was_training);
  return f;
}

}  // namespace reid::trainer
