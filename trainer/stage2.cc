// Stage 2 (image encoder, docs/design.md 5.3): the frozen text bank of all classes, PK
// batches, loss = ID + triplet + I2T on the global batch (cross-modal attention over it when on),
// synchronised BN necks, evaluation every eval_period epochs.
#include <iostream>

#include "data/batch_tensor.h"
#include "data/loader.h"
#include "data/options.h"
#include "trainer/distributed/global_batch.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/distributed/shard.h"
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
  const dist::ShardRange shard = dist::InferenceShard(c, comm_.rank(), comm_.size());
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

StatusOr<std::unique_ptr<dist::GradSync>> Trainer::StartStage2Optimizer() {
  const auto& s2 = cfg_.stage2();
  dist::GradSyncOptions sync_options = dist::GradSyncOptions::FromConfig(cfg_.dist());
  const dist::NamedTensors params = Parameters();
  REID_ASSIGN_OR_RETURN(std::unique_ptr<dist::GradSync> sync,
                        dist::GradSync::Create(comm_, params, Buffers(), sync_options));
  dist::NamedTensors trainable;
  for (const auto& [name, p] : params) {
    if (p.requires_grad()) trainable.emplace_back(name, p);
  }
  const std::vector<ParamGroup> groups = Stage2ParamGroups(s2, trainable);
  step_.base_lrs.clear();
  for (const ParamGroup& g : groups) step_.base_lrs.push_back(g.lr);
  step_.optimizer = MakeOptimizer(s2.optimizer(), s2.momentum(), groups);
  REID_RETURN_IF_ERROR(RestoreOptimizer(2));
  REID_RETURN_IF_ERROR(StartPrecision(2, s2.amp(), s2.amp_dtype()));
  return sync;
}

Stage2Losses Trainer::Stage2Forward(const data::TensorBatch& t, torch::Tensor* y_all) {
  const auto scope = cfg_.dist().loss_scope();
  dist::Communicator* bn_comm = cfg_.dist().sync_bn() && comm_.size() > 1 ? &comm_ : nullptr;
  torch::Tensor x = t.images.to(options_.device);
  torch::Tensor y = t.pids.to(options_.device);
  torch::Tensor cams = model_->cv_embed.defined() ? t.camids.to(options_.device) : torch::Tensor();
  AutocastScope autocast(step_.precision);
  model::VisionOutputs v = model_->EncodeImage(x, cams);
  torch::Tensor score =
      model_->classifier(dist::SyncBatchNormForward(bn_comm, model_->bottleneck, v.cls));
  torch::Tensor score_proj = model_->classifier_proj(
      dist::SyncBatchNormForward(bn_comm, model_->bottleneck_proj, v.cls_proj));
  // Batch-coupled terms see the global batch (GLOBAL scope); per-sample terms too, so that
  // every rank computes the same global loss.
  torch::Tensor proj_all = dist::GatherForLoss(comm_, v.cls_proj, scope);
  *y_all = dist::GatherForLoss(comm_, y, scope);
  return Stage2Loss(cfg_.loss(), dist::GatherForLoss(comm_, score, scope),
                    dist::GatherForLoss(comm_, score_proj, scope),
                    dist::GatherForLoss(comm_, v.cls_last, scope),
                    dist::GatherForLoss(comm_, v.cls, scope), proj_all,
                    model_->ImageTextLogits(proj_all, text_bank_), *y_all);
}

StatusOr<StageEnd> Trainer::RunStage2Epoch(int epoch, const data::PkSampler& sampler,
                                           data::Loader* loader, StepMeter* meter) {
  const auto& s2 = cfg_.stage2();
  const auto& size = cfg_.input().size_train();
  const int64_t images_factor =
      cfg_.dist().loss_scope() == proto::DistConfig::LOCAL ? comm_.size() : 1;
  SetLearningRates(*step_.optimizer, step_.base_lrs, Stage2LrFactor(s2, epoch));
  const int64_t steps = sampler.StepsPerEpoch(epoch);
  loader->StartEpoch(epoch,
                     sampler.RankBatches(epoch, comm_.rank(), comm_.size(), pos_.next_step));
  int64_t step = pos_.next_step;
  data::Batch b;
  for (;;) {
    const auto wait_start = std::chrono::steady_clock::now();
    if (!loader->Next(&b)) break;
    const StepMeter::StepStart start = meter->StartStep();
    const data::TensorBatch t = data::ToTensors(b, size.height(), size.width());
    torch::Tensor y_all;
    const Stage2Losses l = Stage2Forward(t, &y_all);
    REID_ASSIGN_OR_RETURN(const StepOutcome out, Step(l.total, Stage2LossParts(l)));
    ++step;
    StepResult r = Result(epoch, step, steps, out);
    r.images = t.pids.size(0);
    r.global_images = y_all.size(0) * images_factor;
    r.data_wait_s = Seconds(start.start - wait_start);
    meter->EndStep(start, r);
    REID_ASSIGN_OR_RETURN(const StageEnd end, AfterStep(2, epoch, step, steps, out.stepped));
    if (end == StageEnd::kPreempted) return end;
  }
  return StageEnd::kDone;
}

StatusOr<StageEnd> Trainer::RunStage2() {
  const auto& s2 = cfg_.stage2();
  if (model_->has_context_adjust() && !class_centers_.defined()) {
    // Stage 2 without a stage-1 checkpoint: the class centres g needs, from fresh features.
    bool stopped = false;
    torch::Tensor features = ExtractFeatures(dataset_.train, true, &stopped);
    if (stopped) return Preempt(2, pos_.next_epoch, pos_.next_step);
    class_centers_ = ClassCenters(features, TrainLabels());
  }
  SetTrainable(2);
  text_bank_ = BuildTextBank();
  std::vector<int> labels;
  for (const data::Sample& s : dataset_.train) labels.push_back(s.pid);
  const data::PkSampler sampler(labels, s2.ids_per_batch(), s2.num_instances(), cfg_.seed());
  data::Loader loader(&dataset_.train, data::TransformOptionsFromConfig(cfg_.input(), true),
                      data::LoaderOptionsFromConfig(cfg_), data::TorchBufferAllocator());
  REID_ASSIGN_OR_RETURN(const std::unique_ptr<dist::GradSync> sync, StartStage2Optimizer());
  int64_t before = pos_.next_step, total = -pos_.next_step;
  for (int e = 1; e <= s2.max_epochs(); ++e) {
    (e < pos_.next_epoch ? before : total) += sampler.StepsPerEpoch(e);
  }
  StepMeter meter = MakeMeter(2, s2.max_epochs(), s2.log_period(), before, total, *sync);
  model_->train();
  int64_t unreadable_seen = 0;
  for (int epoch = static_cast<int>(pos_.next_epoch); epoch <= s2.max_epochs(); ++epoch) {
    REID_ASSIGN_OR_RETURN(const StageEnd end, RunStage2Epoch(epoch, sampler, &loader, &meter));
    if (end == StageEnd::kPreempted) return end;
    MeterUnreadable(loader.unreadable_count() - unreadable_seen);
    unreadable_seen = loader.unreadable_count();
    pos_.next_step = 0;
    pos_.next_epoch = epoch + 1;
    const bool last = epoch == s2.max_epochs();
    if (epoch % std::max(1, s2.eval_period()) == 0 || last) {
      bool stopped = false;
      Evaluate(epoch, &stopped);
      if (stopped) return Preempt(2, epoch + 1, 0);
    }
    const bool period = epoch % std::max(1, s2.checkpoint_period()) == 0;
    if (last) REID_RETURN_IF_ERROR(SaveCheckpoint(2, epoch + 1, 0));
    if (!last) REID_RETURN_IF_ERROR(EndOfEpochCheckpoint(2, epoch, period));
  }
  if (!eval_.have) {  // resumed past the last epoch: report the accuracy of what was loaded
    bool stopped = false;
    Evaluate(s2.max_epochs(), &stopped);
    if (stopped) return StageEnd::kPreempted;  // nothing changed since the checkpoint
  }
  step_.optimizer.reset();
  pos_.stage = 3;
  return StageEnd::kDone;
}

}  // namespace reid::trainer
