// Stage 2 (image encoder, docs/design.md 5.3): the frozen text bank of all classes, PK
// batches, loss = ID + triplet + I2T on the global batch (cross-modal attention over it when on),
// synchronised BN necks, evaluation every eval_period epochs.
#include <iostream>

#include "data/batch_tensor.h"
#include "data/loader.h"
#include "data/options.h"
#include "trainer/distributed/global_batch.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/losses.h"
#include "trainer/schedule.h"
#include "trainer/trainer.h"

namespace reid::trainer {
namespace {

constexpr int64_t kTextChunk = 64;  // classes per text-encoder call, as the reference

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

torch::Tensor Trainer::BuildTextBank() {
  torch::NoGradGuard no_grad;
  const int64_t c = dataset_.num_train_pids;
  const data::ShardRange shard = data::InferenceShard(c, comm_.rank(), comm_.size());
  std::vector<torch::Tensor> parts;
  for (int64_t b = shard.begin; b < shard.end; b += kTextChunk) {
    const int64_t e = std::min(shard.end, b + kTextChunk);
    torch::Tensor labels = torch::arange(b, e, torch::kLong).to(options_.device);
    torch::Tensor centers;
    if (model_->has_context_adjust()) centers = class_centers_.slice(0, b, e).to(options_.device);
    parts.push_back(model_->EncodeText(labels, centers).to(torch::kCPU, torch::kFloat32));
  }
  torch::Tensor mine =
      parts.empty() ? torch::zeros({0, model_->shape().text.output_dim}) : torch::cat(parts);
  torch::Tensor bank = comm_.size() > 1 ? comm_.AllGatherV(mine) : mine;
  return bank.to(options_.device);  // (C, D)
}

Status Trainer::RunStage2() {
  const auto& s2 = cfg_.stage2();
  if (model_->has_context_adjust() && !class_centers_.defined()) {
    // Stage 2 without a stage-1 checkpoint: the class centres g needs, from fresh features.
    bool stopped = false;
    torch::Tensor features = ExtractFeatures(dataset_.train, true, &stopped);
    if (stopped) return SaveCheckpoint(2, next_epoch_, next_step_);
    std::vector<int64_t> label_list;
    for (const data::Sample& s : dataset_.train) label_list.push_back(s.pid);
    class_centers_ = ClassCenters(features, torch::tensor(label_list, torch::kLong));
  }
  SetTrainable(2);
  text_bank_ = BuildTextBank();

  std::vector<int> labels;
  for (const data::Sample& s : dataset_.train) labels.push_back(s.pid);
  data::PkSampler sampler(labels, s2.ids_per_batch(), s2.num_instances(), cfg_.seed());
  data::Loader loader(&dataset_.train, data::TransformOptionsFromConfig(cfg_.input(), true),
                      data::LoaderOptionsFromConfig(cfg_), data::TorchBufferAllocator());
  dist::GradSyncOptions sync_options = dist::GradSyncOptions::FromConfig(cfg_.dist());
  const dist::NamedTensors params = Parameters();
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<dist::GradSync> sync,
                        dist::GradSync::Create(comm_, params, Buffers(), sync_options));
  dist::NamedTensors trainable;
  for (const auto& [name, p] : params) {
    if (p.requires_grad()) trainable.emplace_back(name, p);
  }
  const std::vector<ParamGroup> groups = Stage2ParamGroups(s2, trainable);
  base_lrs_.clear();
  for (const ParamGroup& g : groups) base_lrs_.push_back(g.lr);
  optimizer_ = MakeOptimizer(s2.optimizer(), s2.momentum(), groups);
  REID_RETURN_IF_ERROR(RestoreOptimizer(2));
  REID_RETURN_IF_ERROR(StartPrecision(2, s2.amp(), s2.amp_dtype()));

  const auto scope = cfg_.dist().loss_scope();
  dist::Communicator* bn_comm = cfg_.dist().sync_bn() && comm_.size() > 1 ? &comm_ : nullptr;
  const auto& size = cfg_.input().size_train();
  const bool sie = model_->cv_embed.defined();
  stage_start_s_ =
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  last_log_time_ = std::chrono::steady_clock::now();
  StartMetering(*sync);
  stage_steps_done_ = 0;
  stage_steps_total_ = -next_step_;
  for (int e = static_cast<int>(next_epoch_); e <= s2.max_epochs(); ++e) {
    stage_steps_total_ += sampler.StepsPerEpoch(e);
  }
  model_->train();
  int64_t unreadable_seen = 0;
  for (int epoch = static_cast<int>(next_epoch_); epoch <= s2.max_epochs(); ++epoch) {
    SetLearningRates(*optimizer_, base_lrs_, Stage2LrFactor(s2, epoch));
    const int64_t steps = sampler.StepsPerEpoch(epoch);
    loader.StartEpoch(epoch, sampler.RankBatches(epoch, comm_.rank(), comm_.size(), next_step_));
    int64_t step = next_step_, images = 0;
    double data_wait = 0;
    data::Batch b;
    for (;;) {
      const auto wait_start = std::chrono::steady_clock::now();
      if (!loader.Next(&b)) break;
      const StepClock clock = StartStep();
      const double wait = Seconds(clock.start - wait_start);
      data_wait += wait;
      data::TensorBatch t = data::ToTensors(b, size.height(), size.width());
      torch::Tensor x = t.images.to(options_.device);
      torch::Tensor y = t.pids.to(options_.device);
      torch::Tensor cams = sie ? t.camids.to(options_.device) : torch::Tensor();
      Stage2Losses l;
      torch::Tensor y_all;
      {
        AutocastScope autocast(precision_);
        model::VisionOutputs v = model_->EncodeImage(x, cams);
        torch::Tensor score =
            model_->classifier(dist::SyncBatchNormForward(bn_comm, model_->bottleneck, v.cls));
        torch::Tensor score_proj = model_->classifier_proj(
            dist::SyncBatchNormForward(bn_comm, model_->bottleneck_proj, v.cls_proj));
        // Batch-coupled terms see the global batch (GLOBAL scope); per-sample terms too, so that
        // every rank computes the same global loss.
        torch::Tensor proj_all = dist::GatherForLoss(comm_, v.cls_proj, scope);
        y_all = dist::GatherForLoss(comm_, y, scope);
        l = Stage2Loss(cfg_.loss(), dist::GatherForLoss(comm_, score, scope),
                       dist::GatherForLoss(comm_, score_proj, scope),
                       dist::GatherForLoss(comm_, v.cls_last, scope),
                       dist::GatherForLoss(comm_, v.cls, scope), proj_all,
                       model_->ImageTextLogits(proj_all, text_bank_), y_all);
      }
      std::vector<double> avg;
      StatusOr<bool> stepped = Step(l.total, Stage2LossParts(l), &avg);
      if (!stepped.ok()) return stepped.status();
      MeterStep(2, epoch, *sync, avg, y.size(0), clock, wait, step + 1 == steps);
      ++step;
      ++stage_steps_done_;
      images += y_all.size(0) * (scope == proto::DistConfig::LOCAL ? comm_.size() : 1);
      if (step % std::max(1, s2.log_period()) == 0 || step == steps) {
        LogProgress(2, epoch, s2.max_epochs(), step, steps, avg, ProgressLossLabels(2), images,
                    data_wait);
        images = 0;
        data_wait = 0;
      }
      if (StopRequested(2, epoch, step)) {
        return SaveCheckpoint(2, step == steps ? epoch + 1 : epoch, step == steps ? 0 : step);
      }
    }
    MeterUnreadable(loader.unreadable_count() - unreadable_seen);
    unreadable_seen = loader.unreadable_count();
    next_step_ = 0;
    next_epoch_ = epoch + 1;
    if (epoch % std::max(1, s2.eval_period()) == 0 || epoch == s2.max_epochs()) {
      bool stopped = false;
      Evaluate(epoch, &stopped);
      if (stopped) return SaveCheckpoint(2, epoch + 1, 0);
    }
    if (epoch % std::max(1, s2.checkpoint_period()) == 0 || epoch == s2.max_epochs()) {
      Status s = SaveCheckpoint(2, epoch + 1, 0);
      if (!s.ok() && epoch == s2.max_epochs()) return s;
    }
  }
  if (!have_eval_) {  // resumed past the last epoch: report the accuracy of what was loaded
    bool stopped = false;
    Evaluate(s2.max_epochs(), &stopped);
    if (stopped) return Status::Ok();  // nothing changed since the checkpoint
  }
  optimizer_.reset();
  stage_ = 3;
  return Status::Ok();
}

}  // namespace reid::trainer
