// Monitor: what one rank of `reid train` reports, behind one small API the trainer feeds with
// plain values: the rank's Prometheus exporter (monitoring.metrics_bind :
// monitoring.metrics_port_base + local rank; every series labelled with the run), rank 0's push
// of the run's outcome to a Pushgateway at its end, and rank 0's OUTPUT_DIR/history.jsonl.
// Monitoring never stops a run: a port that cannot be bound, a gateway that refuses or does not
// answer, a history file that cannot be written are warnings.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "monitoring/history.h"
#include "monitoring/metrics.h"
#include "proto/reid_config.pb.h"

namespace reid::monitoring {

class Exporter;
class Pusher;

// How a run ended; kPreempted: stopped by a signal after writing a checkpoint.
enum class ExitReason { kFinished, kPreempted, kError };
const char* ExitReasonName(ExitReason reason);  // "finished", "preempted", "error"

struct MonitorOptions {
  proto::MonitoringConfig config;
  int rank = 0, local_rank = 0, world_size = 1;
  std::string run_label;     // the `run` label of every series and of the push (run_identity.h)
  std::string history_path;  // rank 0 appends history.jsonl here; "" = none
  std::string torch_version;
  double gpu_total_bytes = -1;  // the rank's GPU memory; < 0: not on a GPU
  // The end-of-run push waits at most this long for the gateway.
  std::chrono::milliseconds final_push_timeout{3000};
};

class Monitor {
 public:
  // Starts the exporter and (rank 0) the Pushgateway client and history file; each that cannot
  // start is a warning (see warnings()).
  explicit Monitor(const MonitorOptions& options);
  // A run that never reached Finish (an exception) is finished with reason "error", status 1.
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // Every step (cheap: counters, histograms, two gauges).
  void RecordStep(const StepStats& s) { metrics_.RecordStep(s); }
  // Every log interval: gauges, resident memory, and rank 0's STEP line of history.jsonl.
  void RecordInterval(const IntervalStats& s);
  // Every evaluation: gauges, and rank 0's EVAL line of history.jsonl.
  void RecordEval(const EvalStats& s);
  void RecordCheckpoint(double unix_seconds, int64_t bytes) {
    metrics_.RecordCheckpoint(unix_seconds, bytes);
  }
  void RecordUnreadable(int64_t images) { metrics_.RecordUnreadable(images); }
  // The start of a stage's loop (progress: done and planned steps).
  void StartStage(const StageProgress& p) { metrics_.StartStage(p); }
  // The end of the run: rank 0 records the outcome (reid_run_*, with the process's
  // `exit_status`) and pushes it, and only it (waiting at most final_push_timeout). Then, when
  // the run finished, each rank's exporter that has been scraped waits for one more scrape
  // (monitoring.final_scrape_wait_s). The exporter serves until destruction. Once.
  void Finish(ExitReason reason, int exit_status);

  const Metrics& metrics() const { return metrics_; }
  // "host:port" of the exporter; "" when off or when it could not start.
  const std::string& exporter_address() const { return exporter_address_; }
  // The warnings printed so far (for tests).
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  void Warn(const std::string& message);
  void RecordAndPushOutcome(ExitReason reason, int exit_status);
  // Appends to history.jsonl; the first failure is a warning, later ones are silent.
  void AppendHistory(const proto::HistoryRecord& r);

  const MonitorOptions options_;
  Metrics metrics_;
  std::unique_ptr<Exporter> exporter_;
  std::unique_ptr<Pusher> pusher_;
  std::unique_ptr<HistoryWriter> history_;
  std::string exporter_address_;
  std::vector<std::string> warnings_;
  std::chrono::steady_clock::time_point start_;
  bool have_eval_ = false;
  double last_map_ = 0, last_rank1_ = 0;
  bool finished_ = false;
  bool history_failed_ = false;
};

// The resident set size of this process (/proc/self/statm), bytes; 0 when unknown.
double ResidentMemoryBytes();

}  // namespace reid::monitoring
