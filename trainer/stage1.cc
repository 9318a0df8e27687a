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
#include "trainer/eval/inference_model.h"
#include "trainer/losses.h"
#include "trainer/schedule.h"
#include "trainer/trainer.h"

namespace reid::trainer {

torch::Tensor Trainer::ExtractFeatures(const std::vector<data::Sample>& split, bool stage1_image,
                                       bool* stopped) {
  *stopped = false;
  const bool was_training = model_->is_training();
  auto stop = [&](int64_t round) { return StopRequested(stage_, -1, round); };
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

Status Trainer::RunStage1() {
  const auto& s1 = cfg_.stage1();
  SetTrainable(1);
  if (ranks_.rank == 0) std::cout << "stage 1: extracting the training images' features\n";
  bool stopped = false;
  torch::Tensor features = ExtractFeatures(dataset_.train, true, &stopped);  // (N, D)
  if (stopped) return SaveCheckpoint(1, next_epoch_, next_step_);
  std::vector<int64_t> label_list;
  for (const data::Sample& s : dataset_.train) label_list.push_back(s.pid);
  torch::Tensor labels = torch::tensor(label_list, torch::kLong);  // (N)
  const int64_t n = features.size(0);

  dist::GradSyncOptions sync_options = dist::GradSyncOptions::FromConfig(cfg_.dist());
  sync_options.overlap = false;  // tiny parameter set; a rank's share may be small at the end
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<dist::GradSync> sync,
                        dist::GradSync::Create(comm_, Parameters(), Buffers(), sync_options));
  ParamGroup group;
  for (auto& p : model_->named_parameters()) {
    if (p.value().requires_grad()) group.params.push_back(p.value());
  }
  group.lr = s1.base_lr();
  group.weight_decay = s1.weight_decay();
  optimizer_ = MakeOptimizer(s1.optimizer(), s1.momentum(), {group});
  REID_RETURN_IF_ERROR(RestoreOptimizer(1));
  REID_RETURN_IF_ERROR(StartPrecision(1, s1.amp(), s1.amp_dtype()));
  const auto scope = cfg_.dist().loss_scope();
  const torch::Tensor features_dev = features.to(options_.device);
  const torch::Tensor labels_dev = labels.to(options_.device);

  stage_start_s_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  last_log_time_ = std::chrono::steady_clock::now();
  StartMetering(*sync);
  stage_steps_done_ = 0;
  stage_steps_total_ = 0;
  for (int e = static_cast<int>(next_epoch_); e <= s1.max_epochs(); ++e) {
    stage_steps_total_ += (n + s1.ims_per_batch() - 1) / s1.ims_per_batch();
  }
  stage_steps_total_ -= next_step_;
  std::vector<double> sums;
  for (int epoch = static_cast<int>(next_epoch_); epoch <= s1.max_epochs(); ++epoch) {
    SetLearningRates(*optimizer_, {1.0}, Stage1LearningRate(s1, epoch));
    const auto batches = data::Stage1GlobalBatches(n, s1.ims_per_batch(), cfg_.seed(), epoch);
    const int64_t steps = static_cast<int64_t>(batches.size());
    int64_t images = 0;
    for (int64_t step = next_step_; step < steps; ++step) {
      const StepClock clock = StartStep();
      const std::vector<int64_t> mine =
          data::SplitByRank(batches[step], comm_.rank(), comm_.size());
      torch::Tensor idx = torch::tensor(mine, torch::kLong).to(options_.device);
      torch::Tensor img = features_dev.index_select(0, idx);  // (b, D)
      torch::Tensor lbl = labels_dev.index_select(0, idx);    // (b)
      torch::Tensor loss;
      {
        AutocastScope autocast(precision_);
        torch::Tensor text = model_->EncodeText(lbl, img);  // (b, D)
        torch::Tensor img_all = dist::GatherForLoss(comm_, img, scope);
        torch::Tensor text_all = dist::GatherForLoss(comm_, text, scope);
        torch::Tensor lbl_all = dist::GatherForLoss(comm_, lbl, scope);
        loss = Stage1Loss(img_all, text_all, lbl_all, s1.temperature());
      }
      std::vector<double> avg;
      StatusOr<bool> stepped = Step(loss, {}, &avg);
      if (!stepped.ok()) return stepped.status();
      MeterStep(1, epoch, *sync, avg, static_cast<int64_t>(mine.size()), clock, 0.0,
                step + 1 == steps);
      images += static_cast<int64_t>(batches[step].size());
      ++stage_steps_done_;
      if ((step + 1) % std::max(1, s1.log_period()) == 0 || step + 1 == steps) {
        LogProgress(1, epoch, s1.max_epochs(), step + 1, steps, avg, ProgressLossLabels(1), images,
                    0.0);
        images = 0;
      }
      if (StopRequested(1, epoch, step + 1)) {
        const bool last = step + 1 == steps;
        return SaveCheckpoint(1, last ? epoch + 1 : epoch, last ? 0 : step + 1);
      }
    }
    next_step_ = 0;
    next_epoch_ = epoch + 1;
    if (epoch % std::max(1, s1.checkpoint_period()) == 0 && epoch < s1.max_epochs()) {
      Status s = SaveCheckpoint(1, epoch + 1, 0);
      if (!s.ok()) LOG(WARNING) << s.message();
    }
  }
  class_centers_ = ClassCenters(features, labels);
  REID_RETURN_IF_ERROR(SaveCheckpoint(1, s1.max_epochs() + 1, 0));
  optimizer_.reset();
  stage_ = 2;
  next_epoch_ = 1;
  next_step_ = 0;
  global_step_ = 0;
  return Status::Ok();
}

}  // namespace reid::trainer
