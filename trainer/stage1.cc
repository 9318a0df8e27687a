// Stage 1 (prompt learning, docs/design.md 5.2): every training image's feature once from
// the frozen image encoder, then per epoch a seeded permutation cut into global batches; text
// features of the batch labels (+ M from g fed by each sample's cached feature) through the frozen
// text encoder; L_i2t + L_t2i on the global batch. Also the sharded feature extraction that
// evaluation shares.
#include <iostream>

#include "data/loader.h"
#include "data/options.h"
#include "trainer/distributed/global_batch.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/distributed/shard.h"
#include "trainer/eval/inference_model.h"
#include "trainer/losses.h"
#include "trainer/schedule.h"
#include "trainer/trainer.h"

namespace reid::trainer {

torch::Tensor Trainer::ExtractFeatures(const std::vector<data::Sample>& split, bool stage1_image,
                                       bool* stopped) {
  *stopped = false;
  const bool was_training = model_->is_training();
  auto stop = [&](int64_t round) { return StopRequested(pos_.stage, -1, round); };
  int64_t unreadable = 0;
  torch::Tensor f;
  if (stage1_image) {  // CLIP's encode_image of the frozen encoder, no SIE (reference)
    model_->eval();
    auto encode = [&](const torch::Tensor& images, const torch::Tensor&) {
      return model_->image_encoder(images).cls_proj;  // (B, D)
    };
    f = ExtractBatchedFeatures(encode, model_->shape().vision.output_dim, cfg_, split, &comm_,
                               options_.device, stop, &unreadable);
  } else {
    InferenceModel view(model_->image_encoder, model_->bottleneck, model_->bottleneck_proj,
                        model_->cv_embed, model_->sie_coe(), model_->neck_after());
    f = ExtractInferenceFeatures(view, cfg_, split, cfg_.eval().flip_feature(), &comm_,
                                 options_.device, stop, &unreadable);
  }
  model_->train(was_training);
  MeterUnreadable(unreadable);
  *stopped = !f.defined();
  return f;
}

torch::Tensor Trainer::ClassCenters(const torch::Tensor& features,
                                    const torch::Tensor& labels) const {
  const int64_t c = dataset_.num_train_pids;
  torch::Tensor sums = torch::zeros({c, features.size(1)}, torch::kFloat64);
  sums.index_add_(0, labels, features.to(torch::kFloat64));
  torch::Tensor counts = torch::zeros({c}, torch::kFloat64);
  counts.index_add_(0, labels, torch::ones({labels.size(0)}, torch::kFloat64));
  return (sums / counts.clamp_min(1).unsqueeze(1)).to(torch::kFloat32);  // (C, D)
}

torch::Tensor Trainer::TrainLabels() const {
  std::vector<int64_t> labels;
  for (const data::Sample& s : dataset_.train) labels.push_back(s.pid);
  return torch::tensor(labels, torch::kLong);  // (N)
}

StatusOr<std::unique_ptr<dist::GradSync>> Trainer::StartStage1Optimizer() {
  const auto& s1 = cfg_.stage1();
  dist::GradSyncOptions sync_options = dist::GradSyncOptions::FromConfig(cfg_.dist());
  sync_options.overlap = false;  // tiny parameter set; a rank's share may be small at the end
  REID_ASSIGN_OR_RETURN(std::unique_ptr<dist::GradSync> sync,
                        dist::GradSync::Create(comm_, Parameters(), Buffers(), sync_options));
  ParamGroup group;
  for (auto& p : model_->named_parameters()) {
    if (p.value().requires_grad()) group.params.push_back(p.value());
  }
  group.lr = s1.base_lr();
  group.weight_decay = s1.weight_decay();
  step_.optimizer = MakeOptimizer(s1.optimizer(), s1.momentum(), {group});
  REID_RETURN_IF_ERROR(RestoreOptimizer(1));
  REID_RETURN_IF_ERROR(StartPrecision(1, s1.amp(), s1.amp_dtype()));
  return sync;
}

StatusOr<StageEnd> Trainer::RunStage1Epoch(int epoch, const Stage1Data& data, StepMeter* meter) {
  const auto& s1 = cfg_.stage1();
  SetLearningRates(*step_.optimizer, {1.0}, Stage1LearningRate(s1, epoch));
  const auto batches = data::Stage1GlobalBatches(data.features.size(0), s1.ims_per_batch(),
                                                 cfg_.seed(), epoch);
  const int64_t steps = static_cast<int64_t>(batches.size());
  const auto scope = cfg_.dist().loss_scope();
  for (int64_t step = pos_.next_step; step < steps; ++step) {
    const StepMeter::StepStart start = meter->StartStep();
    const std::vector<int64_t> mine = dist::SplitByRank(batches[step], comm_.rank(), comm_.size());
    torch::Tensor idx = torch::tensor(mine, torch::kLong).to(options_.device);
    torch::Tensor img = data.features.index_select(0, idx);  // (b, D)
    torch::Tensor lbl = data.labels.index_select(0, idx);    // (b)
    torch::Tensor loss;
    {
      AutocastScope autocast(step_.precision);
      torch::Tensor text = model_->EncodeText(lbl, img);  // (b, D)
      loss = Stage1Loss(dist::GatherForLoss(comm_, img, scope),
                        dist::GatherForLoss(comm_, text, scope),
                        dist::GatherForLoss(comm_, lbl, scope), s1.temperature());
    }
    REID_ASSIGN_OR_RETURN(const StepOutcome out, Step(loss, {}));
    StepResult r = Result(epoch, step + 1, steps, out);
    r.images = static_cast<int64_t>(mine.size());
    r.global_images = static_cast<int64_t>(batches[step].size());
    meter->EndStep(start, r);
    REID_ASSIGN_OR_RETURN(const StageEnd end, AfterStep(1, epoch, step + 1, steps, out.stepped));
    if (end == StageEnd::kPreempted) return end;
  }
  return StageEnd::kDone;
}

StatusOr<StageEnd> Trainer::RunStage1() {
  const auto& s1 = cfg_.stage1();
  SetTrainable(1);
  if (ranks_.rank == 0) std::cout << "stage 1: extracting the training images' features\n";
  bool stopped = false;
  const torch::Tensor features = ExtractFeatures(dataset_.train, true, &stopped);  // (N, D)
  if (stopped) return Preempt(1, pos_.next_epoch, pos_.next_step);
  const torch::Tensor labels = TrainLabels();
  const Stage1Data data{features.to(options_.device), labels.to(options_.device)};
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<dist::GradSync> sync, StartStage1Optimizer());

  const int64_t per_epoch = (features.size(0) + s1.ims_per_batch() - 1) / s1.ims_per_batch();
  const int64_t total = per_epoch * (s1.max_epochs() - pos_.next_epoch + 1) - pos_.next_step;
  const int64_t before = per_epoch * (pos_.next_epoch - 1) + pos_.next_step;
  StepMeter meter = MakeMeter(1, s1.max_epochs(), s1.log_period(), before, total, *sync);
  for (int epoch = static_cast<int>(pos_.next_epoch); epoch <= s1.max_epochs(); ++epoch) {
    REID_ASSIGN_OR_RETURN(const StageEnd end, RunStage1Epoch(epoch, data, &meter));
    if (end == StageEnd::kPreempted) return end;
    pos_.next_step = 0;
    pos_.next_epoch = epoch + 1;
    const bool period = epoch % std::max(1, s1.checkpoint_period()) == 0;
    if (epoch < s1.max_epochs()) REID_RETURN_IF_ERROR(EndOfEpochCheckpoint(1, epoch, period));
  }
  class_centers_ = ClassCenters(features, labels);
  REID_RETURN_IF_ERROR(SaveCheckpoint(1, s1.max_epochs() + 1, 0));
  step_.optimizer.reset();
  pos_ = Position{2, 1, 0, 0};
  return StageEnd::kDone;
}

}  // namespace reid::trainer
