// The reid_ metrics of one rank (monitoring/metrics.txt, docs/monitoring.md) in one prometheus-cpp
// registry, which the rank's exporter serves and rank 0 pushes to a Pushgateway. Plain values in:
// nothing here knows the trainer or LibTorch.
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

// The end-of-run summary (reid_run_*), pushed by rank 0.
struct RunSummary {
  std::string exit_reason;  // finished, preempted or error
  double duration_seconds = 0;
  Losses final_losses;  // the last interval's; empty when no step was logged
  bool have_eval = false;
  double map = 0, rank1 = 0;
  double last_success_unix_seconds = 0;  // set only when the run finished; 0 = not exported
};

// Facts of the build and the job (reid_build_info's labels).
struct BuildFacts {
  std::string version, git_sha, torch;
  int world_size = 1;
};

class Metrics {
 public:
  Metrics(int rank, const BuildFacts& build);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // Counters and histograms of one step, the epoch and the last-step time. A few map lookups.
  void RecordStep(const StepStats& s);
  // Gauges of a log interval (losses, lr, loss scale, bus bandwidth, GPU memory).
  void RecordInterval(const IntervalStats& s);
  void RecordEval(const EvalStats& s);
  void RecordCheckpoint(double unix_seconds, int64_t bytes);
  void RecordUnreadable(int64_t images);
  void SetResidentMemory(double bytes);
  // Adds the reid_run_* families (once; later calls overwrite their values).
  void RecordSummary(const RunSummary& s);

  // The registry in the Prometheus text format (what /metrics serves).
  std::string ExpositionText() const;

 private:
  struct StageMetrics {  // the series labelled {rank, stage}
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
  };
  StageMetrics& Stage(int stage);

  std::shared_ptr<prometheus::Registry> registry_;
  std::string rank_;
  std::map<int, StageMetrics> stages_;
  std::map<std::pair<int, std::string>, prometheus::Gauge*> losses_;
  // Families with a {rank, stage} or {rank, stage, loss} label set.
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
  // Series labelled {rank} only.
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
  prometheus::Gauge* last_step_time_;
  // reid_run_* (RecordSummary), each added when first set.
  prometheus::Family<prometheus::Gauge>* run_final_loss_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_map_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_rank1_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_duration_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_exit_reason_ = nullptr;
  prometheus::Family<prometheus::Gauge>* run_last_success_ = nullptr;
};

// Seconds since the Unix epoch, now.
double UnixSeconds();

}  // namespace reid::monitoring
