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
#include "data/batch_tensor.h"
#include "data/dataset.h"
#include "data/loader.h"
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
#include "trainer/losses.h"
#include "trainer/model/reid_model.h"
#include "trainer/step_meter.h"

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
// How a stage (or one of its epochs) ended; a failure is the Status of the StatusOr around it.
enum class StageEnd { kDone, kPreempted };

// True after the optimiser step that makes `global_step` a multiple of checkpoint.period_steps
// (0: never).
bool StepCheckpointDue(int period_steps, int64_t global_step);

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
  const EvalResult& last_eval() const { return eval_.last; }
  // Where the run reports its metrics (exporter, Pushgateway, history.jsonl); none when null.
  // Not owned; set before Setup.
  void set_monitor(monitoring::Monitor* monitor) { monitor_ = monitor; }

  const data::Dataset& dataset() const { return dataset_; }

 private:
  // The position in training: the stage running and the sampler position the next step takes
  // (what a checkpoint records).
  struct Position {
    int stage = 1;
    int64_t next_epoch = 1, next_step = 0;
    int64_t global_step = 0;  // optimiser steps of the stage
  };
  // The optimiser step's state (trainer.cc: Step, StartPrecision; the stages build the optimiser).
  struct StepState {
    std::unique_ptr<torch::optim::Optimizer> optimizer;
    std::vector<double> base_lrs;  // stage 2's parameter groups
    Precision precision;
    LossScaler scaler;
    int64_t skipped_nonfinite = 0, consecutive_nonfinite = 0;
    int64_t overflow_skipped = 0;  // optimiser steps the loss scaler skipped
  };
  // What the resumed checkpoint holds for a stage that has not started yet (trainer.cc).
  struct PendingResume {
    NamedTensors optimizer;
    std::string optimizer_file;
    int optimizer_stage = 0;
    NamedTensors scaler;
    int scaler_stage = 0;
  };
  struct EvalState {
    EvalResult last;
    bool have = false;
  };
  // One optimiser step's outcome (Step).
  struct StepOutcome {
    bool stepped = false;       // false: skipped (non-finite loss or gradient overflow)
    bool nonfinite = false;     // skipped for a non-finite loss
    std::vector<double> losses;  // averaged over ranks, total first
    double loss_allreduce_s = 0;
  };
  struct Stage1Data {
    torch::Tensor features;  // (N, D) on the device
    torch::Tensor labels;    // (N)
  };

  // --- stage 1 (stage1.cc)
  StatusOr<StageEnd> RunStage1();
  StatusOr<std::unique_ptr<dist::GradSync>> StartStage1Optimizer();
  StatusOr<StageEnd> RunStage1Epoch(int epoch, const Stage1Data& data, StepMeter* meter);
  // Inference features of every item of `split` (rows in split order, on every rank): sharded
  // over ranks and all-gathered. True in *stopped when a preemption interrupted it.
  torch::Tensor ExtractFeatures(const std::vector<data::Sample>& split, bool stage1_image,
                                bool* stopped);
  torch::Tensor ClassCenters(const torch::Tensor& features, const torch::Tensor& labels) const;
  torch::Tensor TrainLabels() const;  // (N) identity of each training image
  // --- stage 2 (stage2.cc)
  StatusOr<StageEnd> RunStage2();
  StatusOr<std::unique_ptr<dist::GradSync>> StartStage2Optimizer();
  StatusOr<StageEnd> RunStage2Epoch(int epoch, const data::PkSampler& sampler,
                                    data::Loader* loader, StepMeter* meter);
  // The forward pass and losses of one batch on the global batch; the gathered labels in *y_all.
  Stage2Losses Stage2Forward(const data::TensorBatch& t, torch::Tensor* y_all);
  torch::Tensor BuildTextBank();
  // --- shared by the stages (trainer.cc)
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
  // when a gradient overflowed. Error after too many non-finite losses in a row.
  StatusOr<StepOutcome> Step(const torch::Tensor& loss, const std::vector<torch::Tensor>& parts);
  // The stage's meter (progress line on rank 0, metrics to the monitor) for `total_steps` steps
  // in this run after `steps_before` done before it (a resumed run's); tells the monitor both.
  StepMeter MakeMeter(int stage, int max_epochs, int log_period, int64_t steps_before,
                      int64_t total_steps, const dist::GradSync& sync);
  // What the meter needs of a finished step besides its images and data wait.
  StepResult Result(int epoch, int64_t step, int64_t steps, const StepOutcome& out);
  // After step `step` (1-based) of `steps` in `epoch`: a stop request (collective) checkpoints
  // and preempts; checkpoint.period_steps checkpoints (at the epoch's end when it is the last).
  StatusOr<StageEnd> AfterStep(int stage, int epoch, int64_t step, int64_t steps, bool stepped);
  // The checkpoint after a stage's epoch that is not its last, when the epoch period or a step
  // checkpoint of its last step asks for one; a failure is a warning (training goes on).
  Status EndOfEpochCheckpoint(int stage, int epoch, bool period_due);
  // Writes the checkpoint of a stop at (next_epoch, next_step) and says kPreempted.
  StatusOr<StageEnd> Preempt(int stage, int64_t next_epoch, int64_t next_step);
  // Collective: true on every rank when any rank got SIGTERM/SIGUSR1. (stage, epoch, step) is
  // the position just finished, for the test hook REID_TEST_STOP_AT="stage:epoch:step" (the last
  // rank requests a stop there, as a signal would). Feature extraction passes epoch -1 and its
  // batch round, so "1:-1:0" checkpoints the model before any stage-1 step.
  bool StopRequested(int stage, int64_t epoch, int64_t step);
  Status SaveCheckpoint(int stage, int64_t next_epoch, int64_t next_step);
  // Loads model.pt (size limited by the model built) and reads the checkpoint's other files into
  // resume_; every file listed must read.
  Status RestoreModel(const std::string& path, const proto::CheckpointMeta& meta);
  // This rank's generator from rng.pt (every rank's state by name "rank<r>"); a warning on rank 0
  // when the checkpoint's world size differs (the missing ranks' streams are not exact).
  Status RestoreRng(const std::string& path, const proto::CheckpointMeta& meta,
                    const std::string& bytes);
  // The resumed checkpoint's optimiser state into step_.optimizer when it is of `stage`.
  Status RestoreOptimizer(int stage);
  Status CheckResumeConfig(const proto::ReidConfig& saved) const;
  // Evaluation of the current model (collective); writes metrics.json on rank 0. True in
  // *stopped when preempted.
  void Evaluate(int epoch, bool* stopped);
  void MeterUnreadable(int64_t images) {
    if (monitor_ != nullptr) monitor_->RecordUnreadable(images);
  }

  // Set at construction and Setup.
  proto::ReidConfig cfg_;
  TrainOptions options_;
  dist::Ranks ranks_;
  dist::Communicator& comm_;
  data::Dataset dataset_;
  model::ReidModel model_{nullptr};
  CheckpointStore store_;
  std::string test_stop_at_;
  monitoring::Monitor* monitor_ = nullptr;

  Position pos_;
  PendingResume resume_;
  StepState step_;
  torch::Tensor class_centers_;  // (C, D) mean stage-1 feature per class, CPU (stage 1, resume)
  torch::Tensor text_bank_;      // (C, D) frozen stage-2 text features (stage 2)
  EvalState eval_;
  bool step_checkpoint_pending_ = false;  // period_steps fell on an epoch's last step
};

// The run directory's checks and files before training: creates it, fails (InvalidArgument)
// when it cannot be written, writes config.textproto (rank 0).
Status PrepareOutputDir(const std::string& dir, const proto::ReidConfig& cfg, int rank);

}  // namespace reid::trainer
