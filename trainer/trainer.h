// The two-stage training of the improved CLIP-ReID (docs/design.md 5): stage 1 learns the prompts
// over cached image features, stage 2 trains the image side against the frozen text bank; in-loop
// evaluation, checkpoints, exact resume and preemption. One Trainer per rank; every method that
// says "collective" must be called on every rank in the same order.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "monitoring/monitor.h"
#include "proto/checkpoint.pb.h"
#include "proto/reid_config.pb.h"
#include "trainer/amp.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/grad_sync.h"
#include "trainer/distributed/ranks.h"
#include "trainer/eval/evaluator.h"
#include "trainer/model/reid_model.h"

namespace reid::trainer {

// Per-run facts from the command line (everything else is in the config).
struct TrainOptions {
  std::string output_dir;  // run directory: config, logs, checkpoints, metrics.json
  std::string data_root;   // overrides data.root when not empty
  std::string resume;      // "" (fresh), "auto" (newest valid in output_dir, if any) or a path
  int start_stage = 1;     // 1, or 2 to start stage 2 (from a stage-1 checkpoint when resuming)
  torch::Device device = torch::kCPU;
};

// How a run ended.
enum class RunEnd { kFinished, kPreempted };

class Trainer {
 public:
  Trainer(proto::ReidConfig cfg, TrainOptions options, const dist::Ranks& ranks,
          dist::Communicator& comm);
  // Loads the dataset (generating the synthetic one when needed), checks it, builds the model
  // and reads the checkpoint to resume from. User errors come back as a Status before any
  // collective (each rank reaches the same verdict from the same files); the synthetic
  // generation ends with a barrier.
  Status Setup();
  // Both stages, evaluations and checkpoints. Collective.
  StatusOr<RunEnd> Run();
  const EvalResult& last_eval() const { return last_eval_; }
  // Where the run reports its metrics (exporter, Pushgateway, history.jsonl); none when null.
  // Not owned; set before Setup.
  void set_monitor(monitoring::Monitor* monitor) { monitor_ = monitor; }

  const data::Dataset& dataset() const { return dataset_; }

 private:
  // --- stage 1 (stage1.cc)
  Status RunStage1();
  // Inference features of every item of `split` (rows in split order, on every rank): sharded
  // over ranks and all-gathered. False in *stopped when a preemption interrupted it.
  torch::Tensor ExtractFeatures(const std::vector<data::Sample>& split, bool stage1_image,
                                bool* stopped);
  torch::Tensor ClassCenters(const torch::Tensor& features, const torch::Tensor& labels) const;
  // --- stage 2 (stage2.cc)
  Status RunStage2();
  torch::Tensor BuildTextBank();
  // --- shared (trainer.cc)
  Status LoadData();
  Status BuildModel();
  void SetTrainable(int stage);
  // The stage's precision (amp on CUDA) and a fresh loss scaler, restored from the resumed
  // checkpoint's when it is of this stage.
  Status StartPrecision(int stage, bool amp, proto::AmpDtype dtype);
  // The model's parameters / buffers by name, in registration order (what GradSync takes).
  dist::NamedTensors Parameters() const;
  dist::NamedTensors Buffers() const;
  // Averages the loss components over ranks, skips the step when the total is not finite,
  // else backward (of the scaled loss under fp16) + optimiser step, which the loss scaler skips
  // when a gradient overflowed. Returns false for a skipped step; error after too many.
  StatusOr<bool> Step(const torch::Tensor& loss, const std::vector<torch::Tensor>& parts,
                      std::vector<double>* averaged);
  // Collective: true on every rank when any rank got SIGTERM/SIGUSR1. (stage, epoch, step) is
  // the position just finished, for the test hook REID_TEST_STOP_AT="stage:epoch:step" (the last
  // rank requests a stop there, as a signal would). Feature extraction passes epoch -1 and its
  // batch round, so "1:-1:0" checkpoints the model before any stage-1 step.
  bool StopRequested(int stage, int64_t epoch, int64_t step);
  Status SaveCheckpoint(int stage, int64_t next_epoch, int64_t next_step);
  // Loads model.pt (size limited by the model built) and reads the checkpoint's other files into
  // the pending state below; every file listed must read.
  Status RestoreModel(const std::string& path, const proto::CheckpointMeta& meta);
  // This rank's generator from rng.pt (every rank's state by name "rank<r>"); a warning on rank 0
  // when the checkpoint's world size differs (the missing ranks' streams are not exact).
  Status RestoreRng(const std::string& path, const proto::CheckpointMeta& meta,
                    const std::string& bytes);
  // The resumed checkpoint's optimiser state into optimizer_ when it is of `stage`.
  Status RestoreOptimizer(int stage);
  Status CheckResumeConfig(const proto::ReidConfig& saved) const;
  // Evaluation of the current model (collective); writes metrics.json on rank 0. False in
  // *stopped when preempted.
  void Evaluate(int epoch, bool* stopped);
  // The progress line of a log interval (rank 0).
  void LogProgress(int stage, int epoch, int max_epochs, int64_t step, int64_t steps,
                   const std::vector<double>& losses, const std::vector<const char*>& names,
                   int64_t images, double data_wait_s);
  // --- metrics of the monitor (trainer.cc)
  // At the start of a stage's loop: a new metrics interval; `sync`'s statistics as they are.
  void StartMetering(const dist::GradSync& sync);
  // When a step starts (its batch in hand): the time and the communicator's wait so far.
  struct StepClock {
    std::chrono::steady_clock::time_point start;
    double comm_wait_s = 0;
  };
  StepClock StartStep() const { return {std::chrono::steady_clock::now(), comm_.wait_seconds()}; }
  // One step: its counters and timings (`images` this rank processed, the time since `clock`,
  // its data wait; the all-reduce time from `sync`'s statistics since the previous step and
  // Step()'s loss all-reduce; the other collectives' from the communicator); every
  // monitoring.log_every_steps steps (0: the stage's log_period) the interval's gauges and
  // history line from the step's averaged `losses` (Step's order, total first), and at
  // `last_of_epoch` when the interval follows log_period (as the progress line does).
  void MeterStep(int stage, int epoch, const dist::GradSync& sync,
                 const std::vector<double>& losses, int64_t images, const StepClock& clock,
                 double data_wait_s, bool last_of_epoch);
  // The end of a metrics interval at `now`: gauges and rank 0's history line.
  void MeterInterval(int stage, int epoch, const std::vector<double>& losses,
                     std::chrono::steady_clock::time_point now);
  void MeterUnreadable(int64_t images) {
    if (monitor_ != nullptr) monitor_->RecordUnreadable(images);
  }

  proto::ReidConfig cfg_;
  TrainOptions options_;
  dist::Ranks ranks_;
  dist::Communicator& comm_;
  data::Dataset dataset_;
  model::ReidModel model_{nullptr};
  CheckpointStore store_;

  // Position: the stage running and the sampler position the next step takes.
  int stage_ = 1;
  int64_t next_epoch_ = 1, next_step_ = 0, global_step_ = 0;
  torch::Tensor class_centers_;  // (C, D) mean stage-1 feature per class, CPU
  torch::Tensor text_bank_;      // (C, D) frozen stage-2 text features
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<double> base_lrs_;
  NamedTensors pending_optimizer_;  // optimiser state of the resumed checkpoint's stage
  std::string pending_optimizer_file_;
  int pending_optimizer_stage_ = 0;
  NamedTensors pending_scaler_;  // loss scaler state of the resumed checkpoint's stage
  int pending_scaler_stage_ = 0;
  Precision precision_;
  LossScaler scaler_;
  int64_t overflow_steps_ = 0;  // optimiser steps the loss scaler skipped

  int64_t skipped_steps_ = 0, consecutive_skipped_ = 0;
  EvalResult last_eval_;
  bool have_eval_ = false;
  double stage_start_s_ = 0;
  int64_t stage_steps_done_ = 0, stage_steps_total_ = 0;
  std::chrono::steady_clock::time_point last_log_time_;
  std::string test_stop_at_;

  // Monitoring (StartMetering / MeterStep).
  monitoring::Monitor* monitor_ = nullptr;
  double loss_allreduce_s_ = 0;  // Step()'s all-reduce of the loss components
  bool last_step_nonfinite_ = false;
  dist::GradSync::Stats sync_seen_;  // the stage's GradSync statistics at the previous step
  struct MetricsInterval {           // what the current metrics interval accumulated
    int64_t steps = 0, images = 0;   // images: this rank's
    double data_wait_s = 0, comm_s = 0, comm_bytes = 0;  // comm: gradient all-reduces
    std::chrono::steady_clock::time_point start;
  } interval_;
};

// The run directory's checks and files before training: creates it, fails (InvalidArgument)
// when it cannot be written, writes config.textproto (rank 0).
Status PrepareOutputDir(const std::string& dir, const proto::ReidConfig& cfg, int rank);

}  // namespace reid::trainer
