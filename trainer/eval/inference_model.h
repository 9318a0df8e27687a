// The inference model: the image encoder, the BN necks and the configured neck feature of a
// trained ReID model, with no classifier and no text side. Built from a checkpoint alone (its
// stored config and tensors give every shape: no dataset, no identity count), or as a view that
// shares the training model's modules. `reid eval --checkpoint`, `extract`, `embed` and `export`
// and the evaluation inside training all compute features through it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "data/dataset.h"
#include "proto/checkpoint.pb.h"
#include "proto/reid_config.pb.h"
#include "trainer/model/clip.h"
#include "trainer/model/weights.h"

namespace reid::dist {
class Communicator;
}

namespace reid::trainer {

class InferenceModelImpl : public torch::nn::Module {
 public:
  // Fresh (random) modules of `vision` (grid = the positional embedding's grid); SIE when
  // num_cameras > 0; the feature after the BN necks when `neck_after`.
  InferenceModelImpl(const model::VisionShape& vision, int64_t num_cameras, double sie_coe,
                     bool neck_after);
  // A view sharing the given modules (the training model's): no copy, same parameters.
  InferenceModelImpl(model::VisionTransformer image_encoder, torch::nn::BatchNorm1d bottleneck,
                     torch::nn::BatchNorm1d bottleneck_proj, torch::Tensor cv_embed, double sie_coe,
                     bool neck_after);

  // images (B, 3, height, width) normalised; cams (B) 0-based camera ids, required with SIE and
  // ignored without -> (B, W + D) = concat(cls, cls_proj), before or after the BN necks (BN in
  // eval mode gives the running statistics). Not L2-normalised.
  torch::Tensor forward(const torch::Tensor& images, const torch::Tensor& cams = {});

  int64_t feature_dim() const { return vision_.width + vision_.output_dim; }
  int64_t num_cameras() const { return cv_embed.defined() ? cv_embed.size(0) : 0; }
  double sie_coe() const { return sie_coe_; }
  bool neck_after() const { return neck_after_; }
  const model::VisionShape& vision() const { return vision_; }

  model::VisionTransformer image_encoder{nullptr};
  torch::nn::BatchNorm1d bottleneck{nullptr}, bottleneck_proj{nullptr};
  torch::Tensor cv_embed;  // (num_cameras, W) when SIE is on

 private:
  model::VisionShape vision_;
  double sie_coe_ = 0;
  bool neck_after_ = false;
};
TORCH_MODULE(InferenceModel);

// Builds the inference model of `cfg` from a state dict with the training model's names
// (image_encoder.*, bottleneck.*, bottleneck_proj.*, cv_embed; other keys are ignored). The
// vision shape comes from the tensors, heads and stride from cfg.model, the grid from
// cfg.input.size_train; the positional embedding is resized when cfg.input.size_test gives
// another grid. InvalidArgument naming `source` and the key for a missing or mis-shaped tensor.
StatusOr<InferenceModel> BuildInferenceModel(const model::StateDict& sd,
                                             const proto::ReidConfig& cfg,
                                             const std::string& source);

// A checkpoint opened for inference.
struct InferenceCheckpoint {
  std::string path;            // the checkpoint directory (resolved from a run directory)
  proto::CheckpointMeta meta;  // verified: every file's size and CRC
  proto::ReidConfig config;    // the checkpoint's config with the caller's test-time overrides
  model::StateDict tensors;    // model.pt by name (every tensor of the training model)
};

// Resolves `checkpoint` (a checkpoint or run directory), verifies it and reads its model
// tensors. NotFound / DataLoss / InvalidArgument naming the path.
StatusOr<InferenceCheckpoint> OpenCheckpoint(const std::string& checkpoint);

// Applies test-time overrides to a checkpoint's config: from `user` (a config the user gave with
// --config) the eval, data and input.size_test sections; then every text-format `set` fragment.
// Fields that change the model (model.*, input.size_train, prompt, modules) are refused with
// InvalidArgument naming the field when `set` touches them.
Status ApplyTestTimeOverrides(const proto::ReidConfig* user, const std::vector<std::string>& set,
                              proto::ReidConfig* cfg);

// The per-batch function of a feature extraction: images (B, 3, height, width), cams (B) int64
// -> features (B, dim) (on the images' device).
using BatchFeatureFn =
    std::function<torch::Tensor(const torch::Tensor& images, const torch::Tensor& cams)>;

// Features (N, dim) of `samples` through `fn`, in sample order: the test transforms of cfg.input,
// cfg.data.test_batch_size per batch, cfg.data.num_workers decode threads. With `comm` of
// several ranks the samples are sharded and the result gathered on every rank (collective).
// `stop(round)` is polled once per batch round, as often on every rank; when it returns true the
// result is undefined. *unreadable (when not null) gets the count of unreadable files met.
torch::Tensor ExtractBatchedFeatures(const BatchFeatureFn& fn, int64_t dim,
                                     const proto::ReidConfig& cfg,
                                     const std::vector<data::Sample>& samples,
                                     dist::Communicator* comm, const torch::Device& device,
                                     const std::function<bool(int64_t round)>& stop = {},
                                     int64_t* unreadable = nullptr);

// Features (N, W + D) of `samples`, in their order, through the test transforms of cfg.input
// (cfg.data.test_batch_size per batch, cfg.data.num_workers threads); mean with the horizontal
// mirror's feature when `flip`. With `comm` of several ranks the samples are sharded and the
// result gathered on every rank (collective). `stop(round)` is polled once per batch round (on
// every rank alike); when it returns true the result is undefined. Cameras are passed when the
// model has SIE (each sample's camid must be below its camera count: checked by the caller).
torch::Tensor ExtractInferenceFeatures(InferenceModel& model, const proto::ReidConfig& cfg,
                                       const std::vector<data::Sample>& samples, bool flip,
                                       dist::Communicator* comm, const torch::Device& device,
                                       const std::function<bool(int64_t round)>& stop = {},
                                       int64_t* unreadable = nullptr);

}  // namespace reid::trainer
