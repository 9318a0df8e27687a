// The reid_ metric families and how each recorded value maps onto them.
#include "monitoring/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <chrono>

namespace reid::monitoring {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Labels;

// Seconds, from sub-millisecond collectives on one node to minute-long steps of a large model.
const prometheus::Histogram::BucketBoundaries& SecondsBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,   0.5,    1,     2.5,    5,     10,   25,    60,   120};
  return kBuckets;
}

}  // namespace

double UnixSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Metrics::Metrics(const std::string& run, int rank, const BuildFacts& build)
    : registry_(std::make_shared<prometheus::Registry>()),
      outcome_registry_(std::make_shared<prometheus::Registry>()),
      run_label_({{"run", run}}),
      rank_(std::to_string(rank)) {
  auto& r = *registry_;
  loss_family_ = &BuildGauge()
                      .Name("reid_loss")
                      .Help(
                          "Last loss component averaged over ranks (loss=total, supcon, id, "
                          "triplet, i2t)")
                      .Labels(run_label_)
                      .Register(r);
  lr_family_ = &BuildGauge()
                    .Name("reid_learning_rate")
                    .Help("Learning rate of the first parameter group")
                    .Labels(run_label_)
                    .Register(r);
  samples_family_ = &BuildCounter()
                         .Name("reid_samples_total")
                         .Help("Training images processed by this rank")
                         .Labels(run_label_)
                         .Register(r);
  steps_family_ = &BuildCounter()
                       .Name("reid_steps_total")
                       .Help("Optimiser steps taken, skipped ones included")
                       .Labels(run_label_)
                       .Register(r);
  epoch_family_ = &BuildGauge()
                       .Name("reid_epoch")
                       .Help("Current epoch of the stage")
                       .Labels(run_label_)
                       .Register(r);
  step_seconds_family_ = &BuildHistogram()
                              .Name("reid_step_seconds")
                              .Help("Wall time of one training step, data wait excluded")
                              .Labels(run_label_)
                              .Register(r);
  compute_seconds_family_ =
      &BuildHistogram()
           .Name("reid_compute_seconds")
           .Help("Time of a step outside collectives and data wait (a straggler computes longer)")
           .Labels(run_label_)
           .Register(r);
  data_wait_family_ = &BuildHistogram()
                           .Name("reid_data_wait_seconds")
                           .Help("Time one step waited for its batch")
                           .Labels(run_label_)
                           .Register(r);
  allreduce_family_ = &BuildHistogram()
                           .Name("reid_allreduce_seconds")
                           .Help("Time per step in or blocked on the gradient and loss all-reduces")
                           .Labels(run_label_)
                           .Register(r);
  bus_bandwidth_family_ =
      &BuildGauge()
           .Name("reid_allreduce_bus_bandwidth_bytes_per_second")
           .Help("Gradient all-reduce bus bandwidth: bytes * 2(n-1)/n / seconds")
           .Labels(run_label_)
           .Register(r);
  nonfinite_family_ = &BuildCounter()
                           .Name("reid_nonfinite_steps_skipped_total")
                           .Help("Steps skipped for a non-finite loss")
                           .Labels(run_label_)
                           .Register(r);
  loss_scale_family_ = &BuildGauge()
                            .Name("reid_loss_scale")
                            .Help("fp16 dynamic loss scale (1 when off)")
                            .Labels(run_label_)
                            .Register(r);
  done_steps_family_ = &BuildGauge()
                            .Name("reid_stage_done_steps")
                            .Help("Steps of the stage done so far, those before a resume included")
                            .Labels(run_label_)
                            .Register(r);
  planned_steps_family_ = &BuildGauge()
                               .Name("reid_stage_planned_steps")
                               .Help("Steps the whole stage takes (progress = done / planned)")
                               .Labels(run_label_)
                               .Register(r);
  planned_epochs_family_ = &BuildGauge()
                                .Name("reid_stage_planned_epochs")
                                .Help("Epochs the stage takes (its max_epochs)")
                                .Labels(run_label_)
                                .Register(r);
  const Labels rank_label = {{"rank", rank_}};
  BuildGauge()
      .Name("reid_process_start_time_seconds")
      .Help("Unix time at which this rank's process started reporting (changes on a restart)")
      .Labels(run_label_)
      .Register(r)
      .Add(rank_label)
      .Set(UnixSeconds());
  evals_ = &BuildCounter()
                .Name("reid_evals_total")
                .Help("Evaluations done")
                .Labels(run_label_)
                .Register(r)
                .Add(rank_label);
  unreadable_ = &BuildCounter()
                     .Name("reid_unreadable_images_total")
                     .Help("Images that failed to decode")
                     .Labels(run_label_)
                     .Register(r)
                     .Add(rank_label);
  resident_memory_ = &BuildGauge()
                          .Name("reid_process_resident_memory_bytes")
                          .Help("Resident set size of this rank's process")
                          .Labels(run_label_)
                          .Register(r)
                          .Add(rank_label);
  gpu_allocated_family_ = &BuildGauge()
                               .Name("reid_gpu_memory_allocated_bytes")
                               .Help("CUDA caching allocator: bytes allocated to tensors")
                               .Labels(run_label_)
                               .Register(r);
  gpu_reserved_family_ = &BuildGauge()
                              .Name("reid_gpu_memory_reserved_bytes")
                              .Help("CUDA caching allocator: bytes reserved from the device")
                              .Labels(run_label_)
                              .Register(r);
  last_step_time_ = &BuildGauge()
                         .Name("reid_last_step_timestamp_seconds")
                         .Help("Unix time of this rank's last training step")
                         .Labels(run_label_)
                         .Register(r)
                         .Add(rank_label);
  BuildGauge()
      .Name("reid_build_info")
      .Help("Build facts (constant 1)")
      .Labels(run_label_)
      .Register(r)
      .Add({{"version", build.version},
            {"git_sha", build.git_sha},
            {"torch", build.torch},
            {"world_size", std::to_string(build.world_size)},
            {"rank", rank_}})
      .Set(1);
}

Metrics::StageMetrics& Metrics::Stage(int stage) {
  auto it = stages_.find(stage);
  if (it != stages_.end()) return it->second;
  const Labels l = {{"rank", rank_}, {"stage", std::to_string(stage)}};
  const auto& b = SecondsBuckets();
  StageMetrics m;
  m.learning_rate = &lr_family_->Add(l);
  m.samples = &samples_family_->Add(l);
  m.steps = &steps_family_->Add(l);
  m.epoch = &epoch_family_->Add(l);
  m.step_seconds = &step_seconds_family_->Add(l, b);
  m.compute_seconds = &compute_seconds_family_->Add(l, b);
  m.data_wait_seconds = &data_wait_family_->Add(l, b);
  m.allreduce_seconds = &allreduce_family_->Add(l, b);
  m.bus_bandwidth = nullptr;  // exported once measured (one rank alone has no all-reduce)
  m.nonfinite_skipped = &nonfinite_family_->Add(l);
  m.loss_scale = &loss_scale_family_->Add(l);
  m.loss_scale->Set(1);
  return stages_.emplace(stage, m).first->second;
}

void Metrics::RecordStep(const StepStats& s) {
  StageMetrics& m = Stage(s.stage);
  m.samples->Increment(static_cast<double>(std::max<int64_t>(0, s.images)));
  m.steps->Increment();
  m.epoch->Set(s.epoch);
  m.step_seconds->Observe(s.step_seconds);
  m.compute_seconds->Observe(
      std::max(0.0, s.step_seconds - s.allreduce_seconds - s.other_collective_seconds));
  m.data_wait_seconds->Observe(s.data_wait_seconds);
  m.allreduce_seconds->Observe(s.allreduce_seconds);
  if (s.skipped_nonfinite) m.nonfinite_skipped->Increment();
  if (m.done_steps != nullptr) m.done_steps->Increment();
  last_step_time_->Set(UnixSeconds());
}

void Metrics::RecordInterval(const IntervalStats& s) {
  StageMetrics& m = Stage(s.stage);
  m.epoch->Set(s.epoch);
  m.learning_rate->Set(s.learning_rate);
  m.loss_scale->Set(s.loss_scale);
  if (s.bus_bandwidth_bytes_per_second >= 0) {
    if (m.bus_bandwidth == nullptr) {
      m.bus_bandwidth =
          &bus_bandwidth_family_->Add({{"rank", rank_}, {"stage", std::to_string(s.stage)}});
    }
    m.bus_bandwidth->Set(s.bus_bandwidth_bytes_per_second);
  }
  for (const auto& [name, value] : s.losses) {
    prometheus::Gauge*& g = losses_[{s.stage, name}];
    if (g == nullptr) {
      g = &loss_family_->Add({{"rank", rank_}, {"stage", std::to_string(s.stage)}, {"loss", name}});
    }
    g->Set(value);
  }
  if (s.gpu_allocated_bytes >= 0)
    gpu_allocated_family_->Add({{"rank", rank_}}).Set(s.gpu_allocated_bytes);
  if (s.gpu_reserved_bytes >= 0)
    gpu_reserved_family_->Add({{"rank", rank_}}).Set(s.gpu_reserved_bytes);
}

void Metrics::SetGpuMemoryTotal(double bytes) {
  if (bytes < 0) return;
  if (gpu_total_ == nullptr) {
    gpu_total_ = &BuildGauge()
                      .Name("reid_gpu_memory_total_bytes")
                      .Help("Memory of this rank's GPU (what reserved bytes are compared with)")
                      .Labels(run_label_)
                      .Register(*registry_)
                      .Add({{"rank", rank_}});
  }
  gpu_total_->Set(bytes);
}

void Metrics::StartStage(const StageProgress& p) {
  StageMetrics& m = Stage(p.stage);
  const Labels l = {{"rank", rank_}, {"stage", std::to_string(p.stage)}};
  if (m.done_steps == nullptr) m.done_steps = &done_steps_family_->Add(l);
  m.done_steps->Set(static_cast<double>(p.done_steps));
  planned_steps_family_->Add(l).Set(static_cast<double>(p.planned_steps));
  planned_epochs_family_->Add(l).Set(p.planned_epochs);
}

void Metrics::RecordEval(const EvalStats& s) {
  if (eval_map_ == nullptr) {  // exported from the first evaluation on: no fake 0 before it
    auto& r = *registry_;
    const Labels l = {{"rank", rank_}};
    eval_map_ = &BuildGauge()
                     .Name("reid_eval_map_ratio")
                     .Help("mAP of the last evaluation")
                     .Labels(run_label_)
                     .Register(r)
                     .Add(l);
    eval_rank1_ = &BuildGauge()
                       .Name("reid_eval_rank1_ratio")
                       .Help("Rank-1 of the last evaluation")
                       .Labels(run_label_)
                       .Register(r)
                       .Add(l);
    eval_best_map_ = &BuildGauge()
                          .Name("reid_eval_best_map_ratio")
                          .Help("Best mAP so far")
                          .Labels(run_label_)
                          .Register(r)
                          .Add(l);
    eval_best_rank1_ = &BuildGauge()
                            .Name("reid_eval_best_rank1_ratio")
                            .Help("Best Rank-1 so far")
                            .Labels(run_label_)
                            .Register(r)
                            .Add(l);
    eval_best_map_->Set(s.map);
    eval_best_rank1_->Set(s.cmc.empty() ? 0.0 : s.cmc[0]);
  }
  const double rank1 = s.cmc.empty() ? 0.0 : s.cmc[0];
  eval_map_->Set(s.map);
  eval_rank1_->Set(rank1);
  eval_best_map_->Set(std::max(eval_best_map_->Value(), s.map));
  eval_best_rank1_->Set(std::max(eval_best_rank1_->Value(), rank1));
  evals_->Increment();
}

void Metrics::RecordCheckpoint(double unix_seconds, int64_t bytes) {
  if (checkpoint_time_ == nullptr) {
    auto& r = *registry_;
    const Labels l = {{"rank", rank_}};
    checkpoint_time_ = &BuildGauge()
                            .Name("reid_checkpoint_last_timestamp_seconds")
                            .Help("Unix time of the last checkpoint written")
                            .Labels(run_label_)
                            .Register(r)
                            .Add(l);
    checkpoint_size_ = &BuildGauge()
                            .Name("reid_checkpoint_last_size_bytes")
                            .Help("Size of the last checkpoint written")
                            .Labels(run_label_)
                            .Register(r)
                            .Add(l);
  }
  checkpoint_time_->Set(unix_seconds);
  checkpoint_size_->Set(static_cast<double>(bytes));
}

void Metrics::RecordUnreadable(int64_t images) {
  if (images > 0) unreadable_->Increment(static_cast<double>(images));
}

void Metrics::SetResidentMemory(double bytes) { resident_memory_->Set(bytes); }

void Metrics::RecordOutcome(const RunOutcome& s) {
  auto& r = *outcome_registry_;
  auto gauge = [&](prometheus::Family<prometheus::Gauge>*& family, const char* name,
                   const char* help) -> prometheus::Family<prometheus::Gauge>& {
    if (family == nullptr) family = &BuildGauge().Name(name).Help(help).Register(r);
    return *family;
  };
  gauge(run_exit_reason_, "reid_run_exit_reason_info",
        "How the run ended (reason=finished, preempted or error), 1")
      .Add({{"reason", s.exit_reason}})
      .Set(1);
  gauge(run_exit_status_, "reid_run_exit_status",
        "Exit status of the run's rank 0 (0 finished, 1 failure, 2 user error, 75 stopped by a "
        "signal after a checkpoint)")
      .Add({})
      .Set(s.exit_status);
  gauge(run_duration_, "reid_run_duration_seconds", "Wall time of the run (this process)")
      .Add({})
      .Set(s.duration_seconds);
  if (s.have_eval) {
    gauge(run_map_, "reid_run_map_ratio", "mAP at the end of the run").Add({}).Set(s.map);
    gauge(run_rank1_, "reid_run_rank1_ratio", "Rank-1 at the end of the run").Add({}).Set(s.rank1);
  }
  if (s.last_success_unix_seconds > 0) {
    gauge(run_last_success_, "reid_run_last_success_timestamp_seconds",
          "Unix time at which the run finished (pushed only on success)")
        .Add({})
        .Set(s.last_success_unix_seconds);
  }
}

std::string Metrics::ExpositionText() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

std::string Metrics::OutcomeText() const {
  return prometheus::TextSerializer().Serialize(outcome_registry_->Collect());
}

}  // namespace reid::monitoring
