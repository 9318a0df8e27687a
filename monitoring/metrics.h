// The reid_ metrics of one rank (monitoring/metrics.txt, docs/monitoring.md): the live series in
// one prometheus-cpp registry, which the rank's exporter serves (every series labelled with the
// run and the rank), and the run's outcome in another, which rank 0 pushes to a Pushgateway at
// the end. Plain values in: nothing here knows the trainer or LibTorch.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace reid::monitoring {

// Loss components by name, the first one "total" (the `loss` label; history.jsonl's keys).
using Losses = std::vector<std::pair<std::string, double>>;

// One optimiser step of this rank (every step; skipped ones too).
struct StepStats {
  int stage = 1;
  int epoch = 1;
  int64_t images = 0;            // training images this rank processed in the step
  double step_seconds = 0;       // wall time of the step, the wait for its batch excluded
  double data_wait_seconds = 0;  // time the step waited for its batch
  double allreduce_seconds = 0;  // in or blocked on the gradient and loss all-reduces
  // Blocked in the step's other collectives (the global batch's all-gathers, sync BN), which
  // reid_compute_seconds leaves out as well.
  double other_collective_seconds = 0;
  bool skipped_nonfinite = false;  // skipped for a non-finite loss
};

// The end of a log interval: averaged losses and rates (every rank; rank 0 also writes them to
// history.jsonl).
struct IntervalStats {
  int stage = 1;
  int epoch = 1;
  int64_t step = 0;                            // optimiser steps of this stage so far
  Losses losses;                               // averaged over ranks
  double learning_rate = 0;                    // first parameter group
  double images_per_second = 0;                // over all ranks
  double data_wait_fraction = 0;               // share of the interval waiting for data, [0, 1]
  double loss_scale = 1;                       // fp16 dynamic loss scale; 1 when off
  double bus_bandwidth_bytes_per_second = -1;  // all-reduce bus bandwidth; < 0: not measured
  double gpu_allocated_bytes = -1;             // CUDA caching allocator; < 0: not on CUDA
  double gpu_reserved_bytes = -1;
};

// One evaluation.
struct EvalStats {
  int stage = 2;
  int epoch = 0;
  int64_t step = 0;         // optimiser steps of this stage so far
  double map = 0;           // [0, 1]
  std::vector<double> cmc;  // CMC at ranks 1.., [0, 1]
};

// The outcome of a run (reid_run_*), pushed by rank 0 at its end: the batch job's result only.
struct RunOutcome {
  std::string exit_reason;  // finished, preempted or error
  int exit_status = 0;      // the process's exit status (0, 1, 2, 75)
  double duration_seconds = 0;
  bool have_eval = false;  // map and rank1 are exported only after an evaluation
  double map = 0, rank1 = 0;
  double last_success_unix_seconds = 0;  // set only when the run finished; 0 = not exported
};

// Where a stage stands: what progress and ETA queries divide.
struct StageProgress {
  int stage = 1;
  int64_t done_steps = 0;     // steps of the stage done before this process (a resume) started it
  int64_t planned_steps = 0;  // steps the whole stage takes, from its first epoch to its last
  int planned_epochs = 0;     // the stage's max_epochs
};

// Facts of the build and the job (reid_build_info's labels).
struct BuildFacts {
  std::string version, git_sha, torch;
  int world_size = 1;
};

class Metrics {
 public:
  // `run`: the value of the `run` label (a sanitised label value, monitoring/run_identity.h).
  Metrics(const std::string& run, int rank, const BuildFacts& build);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // The live series (what the exporter serves).
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // The outcome series (what rank 0 pushes); empty until RecordOutcome.
  std::shared_ptr<prometheus::Registry> outcome_registry() const { return outcome_registry_; }

  // Counters and histograms of one step, the epoch and the last-step time. A few map lookups.
  void RecordStep(const StepStats& s);
  // Gauges of a log interval (losses, lr, loss scale, bus bandwidth, GPU memory).
  void RecordInterval(const IntervalStats& s);
  void RecordEval(const EvalStats& s);
  void RecordCheckpoint(double unix_seconds, int64_t bytes);
  void RecordUnreadable(int64_t images);
  void SetResidentMemory(double bytes);
  // The GPU's memory (reid_gpu_memory_total_bytes); not exported when never set.
  void SetGpuMemoryTotal(double bytes);
  // The start of a stage's loop; each RecordStep of that stage then counts one more step done.
  void StartStage(const StageProgress& p);
  // Fills the outcome registry (once; later calls overwrite its values).
  void RecordOutcome(const RunOutcome& s);

  // The live registry in the Prometheus text format (what /metrics serves).
  std::string ExpositionText() const;
  // The outcome registry in the same format (what a push sends).
  std::string OutcomeText() const;

 private:
  struct StageMetrics {  // the series labelled {run, rank, stage}
    prometheus::Gauge* learning_rate;
    prometheus::Counter* samples;
    prometheus::Counter* steps;
    prometheus::Gauge* epoch;
    prometheus::Histogram* step_seconds;
    prometheus::Histogram* compute_seconds;
    prometheus::Histogram* data_wait_seconds;
    prometheus::Histogram* allreduce_seconds;
    prometheus::Gauge* bus_bandwidth;
    prometheus::Counter* nonfinite_skipped;
    prometheus::Gauge* loss_scale;
    prometheus::Gauge* done_steps = nullptr;  // progress: from StartStage on
  };
  StageMetrics& Stage(int stage);

  std::shared_ptr<prometheus::Registry> registry_, outcome_registry_;
  const prometheus::Labels run_label_;  // {run}: every live family's constant label
  std::string rank_;
  std::map<int, StageMetrics> stages_;
  std::map<std::pair<int, std::string>, prometheus::Gauge*> losses_;
  // Families with a {rank, stage} or {rank, stage, loss} label set (and run).
  prometheus::Family<prometheus::Gauge>* loss_family_;
  prometheus::Family<prometheus::Gauge>* lr_family_;
  prometheus::Family<prometheus::Counter>* samples_family_;
  prometheus::Family<prometheus::Counter>* steps_family_;
  prometheus::Family<prometheus::Gauge>* epoch_family_;
  prometheus::Family<prometheus::Histogram>* step_seconds_family_;
  prometheus::Family<prometheus::Histogram>* compute_seconds_family_;
  prometheus::Family<prometheus::Histogram>* data_wait_family_;
  prometheus::Family<prometheus::Histogram>* allreduce_family_;
  prometheus::Family<prometheus::Gauge>* bus_bandwidth_family_;
  prometheus::Family<prometheus::Counter>* nonfinite_family_;
  prometheus::Family<prometheus::Gauge>* loss_scale_family_;
  prometheus::Family<prometheus::Gauge>* done_steps_family_;
  prometheus::Family<prometheus::Gauge>* planned_steps_family_;
  prometheus::Family<prometheus::Gauge>* planned_epochs_family_;
  // Series labelled {rank} only (and run).
  prometheus::Gauge* eval_map_ = nullptr;  // eval and checkpoint gauges: from the first one on
  prometheus::Gauge* eval_rank1_ = nullptr;
  prometheus::Gauge* eval_best_map_ = nullptr;
  prometheus::Gauge* eval_best_rank1_ = nullptr;
  prometheus::Counter* evals_;
  prometheus::Gauge* checkpoint_time_ = nullptr;
  prometheus::Gauge* checkpoint_size_ = nullptr;
  prometheus::Counter* unreadable_;
  prometheus::Gauge* resident_memory_;
  prometheus::Family<prometheus::Gauge>* gpu_allocated_family_;
  prometheus::Family<prometheus::Gauge>* gpu_reserved_family_;
  prometheus::Gauge* gpu_total_ = nullptr;
  prometheus::Gauge* last_step_time_;
  // reid_run_* (RecordOutcome) in outcome_registry_, each added when first set.
  prometheus::Family<prometheus::Gauge>* run_exit_status_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_map_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_rank1_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_duration_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_exit_reason_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_last_success_ = nullptr;
};

// Seconds since the Unix epoch, now.
double UnixSeconds();

}  // namespace reid::monitoring
