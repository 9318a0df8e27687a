// Metering and progress of one stage's training loop, in one place: the loop calls StartStep()
// when a step's batch is in hand and EndStep() when the step is done; the meter feeds the monitor
// (per-step counters and timings, every metrics interval the gauges and rank 0's history line)
// and prints the progress line every log period and at the end of each epoch.
#pragma once

#include <chrono>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "monitoring/monitor.h"

namespace reid::trainer {

// What the meter reads from the distributed runtime and the device, as functions so that the
// meter can be tested without them. Each may be empty (then 0, or -1 for GPU memory).
struct MeterProbes {
  std::function<double()> comm_wait_s;      // the communicator's total blocked time so far
  std::function<double()> sync_wait_s;      // GradSync: time Finish() blocked so far
  std::function<double()> sync_comm_s;      // GradSync: time its all-reduces ran so far
  std::function<int64_t()> sync_steps;      // GradSync: steps synchronised so far
  std::function<double()> sync_total_bytes;  // GradSync: bytes all-reduced per step
  std::function<void(double* allocated, double* reserved)> gpu_memory;
};

struct MeterOptions {
  int stage = 1;
  int max_epochs = 1;
  int log_period = 1;          // progress line every this many steps of an epoch (and its last)
  int metrics_every = 0;       // metrics interval in steps; 0: follows log_period (and epochs)
  int world_size = 1;
  int rank = 0;
  int64_t total_steps = 0;     // the steps this stage takes in this run (the ETA's denominator)
  std::vector<std::string> progress_names;  // the progress line's loss names, in losses' order
  // The metrics' `loss` label of each reported value and its index in StepResult::losses.
  std::vector<std::pair<std::string, int>> metric_losses;
};

// One finished step, as the loop knows it.
struct StepResult {
  int epoch = 1;
  int64_t step = 0;            // steps of this epoch done, this one included (1-based)
  int64_t steps = 0;           // steps in this epoch
  std::vector<double> losses;  // averaged over ranks, total first
  int64_t images = 0;          // this rank's images
  int64_t global_images = 0;   // every rank's images
  double data_wait_s = 0;      // time waiting for this step's batch
  double loss_allreduce_s = 0;  // the step's all-reduce of the loss components
  bool skipped_nonfinite = false;
  double learning_rate = 0;
  double loss_scale = 1;       // 1 when no loss scaling
  int64_t global_step = 0;     // optimiser steps of this stage so far
};

class StepMeter {
 public:
  using Clock = std::chrono::steady_clock;
  // `monitor` may be null (no metrics); `progress` may be null (no progress line; rank 0 only
  // passes one). Starts the stage's clock and first metrics interval at `now`.
  StepMeter(MeterOptions options, MeterProbes probes, monitoring::Monitor* monitor,
            std::ostream* progress, Clock::time_point now = Clock::now());

  struct StepStart {
    Clock::time_point start;
    double comm_wait_s = 0;
  };
  StepStart StartStep(Clock::time_point now = Clock::now()) const;
  void EndStep(const StepStart& start, const StepResult& r, Clock::time_point now = Clock::now());

  int64_t steps_done() const { return steps_done_; }
  // The progress line of the last log point ("" before the first).
  const std::string& last_progress() const { return last_progress_; }

 private:
  double Probe(const std::function<double()>& f) const { return f ? f() : 0.0; }
  void EndInterval(const StepResult& r, Clock::time_point now);
  void Progress(const StepResult& r, Clock::time_point now);

  const MeterOptions options_;
  const MeterProbes probes_;
  monitoring::Monitor* const monitor_;
  std::ostream* const progress_;
  const Clock::time_point stage_start_;
  int64_t steps_done_ = 0;
  // Since the previous progress line.
  Clock::time_point last_log_;
  int64_t log_images_ = 0;
  double log_data_wait_s_ = 0;
  // GradSync's counters at the previous step.
  double sync_wait_seen_ = 0, sync_comm_seen_ = 0;
  int64_t sync_steps_seen_ = 0;
  // The current metrics interval.
  struct Interval {
    int64_t steps = 0, images = 0;  // images: this rank's
    double data_wait_s = 0, comm_s = 0, comm_bytes = 0;
    Clock::time_point start;
  } interval_;
  std::string last_progress_;
};

// "12m05s" or "1h02m".
std::string FormatDuration(double seconds);

}  // namespace reid::trainer
