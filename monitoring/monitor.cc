// Monitor: wiring of metrics, exporter, Pushgateway and history file, and its warnings.
#include "monitoring/monitor.h"

#include <glog/logging.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "base/build_info.h"
#include "monitoring/exporter.h"
#include "monitoring/pusher.h"

namespace reid::monitoring {
namespace {

BuildFacts FactsOf(const MonitorOptions& o) {
  BuildFacts f;
  f.version = base::Version();
  f.git_sha = base::GitSha();
  f.torch = o.torch_version;
  f.world_size = o.world_size;
  return f;
}

}  // namespace

const char* ExitReasonName(ExitReason reason) {
  switch (reason) {
    case ExitReason::kFinished:
      return "finished";
    case ExitReason::kPreempted:
      return "preempted";
    case ExitReason::kError:
      return "error";
  }
  return "error";
}

double ResidentMemoryBytes() {
  std::ifstream statm("/proc/self/statm");
  double size = 0, resident = 0;
  if (!(statm >> size >> resident)) return 0;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE));
}

Monitor::Monitor(const MonitorOptions& options)
    : options_(options),
      metrics_(options.run_label, options.rank, FactsOf(options)),
      start_(std::chrono::steady_clock::now()) {
  const auto& c = options_.config;
  metrics_.SetResidentMemory(ResidentMemoryBytes());
  metrics_.SetGpuMemoryTotal(options_.gpu_total_bytes);
  if (c.metrics_port_base() > 0) {
    const int port = c.metrics_port_base() + options_.local_rank;
    auto exporter = Exporter::Start(c.metrics_bind(), port, metrics_.registry());
    if (exporter.ok()) {
      exporter_ = std::move(*exporter);
      exporter_address_ = exporter_->address();
      LOG(INFO) << "monitoring: rank " << options_.rank << " serves metrics on http://"
                << exporter_address_ << "/metrics (run=\"" << options_.run_label << "\")";
    } else {
      Warn("rank " + std::to_string(options_.rank) + ": " + exporter.status().message());
    }
  }
  if (options_.rank != 0) return;
  if (!c.pushgateway_url().empty()) {
    auto pusher = Pusher::Start(c.pushgateway_url(), c.job(), options_.run_label,
                                metrics_.outcome_registry());
    if (pusher.ok()) {
      pusher_ = std::move(*pusher);
    } else {
      Warn(pusher.status().message() + "; the run goes on without pushes");
    }
  }
  if (!options_.history_path.empty()) {
    auto history = HistoryWriter::Open(options_.history_path);
    if (history.ok()) {
      history_ = std::move(*history);
    } else {
      Warn(history.status().message() + "; the run goes on without a history");
    }
  }
}

Monitor::~Monitor() {
  if (!finished_) Finish(ExitReason::kError, 1);
}

void Monitor::Warn(const std::string& message) {
  LOG(WARNING) << "monitoring: " << message;
  warnings_.push_back(message);
}

namespace {

// A history line's common fields: kind, wall time now, and the training position.
proto::HistoryRecord HistoryRecordAt(proto::HistoryRecord::Kind kind, int stage, int epoch,
                                     int64_t step) {
  proto::HistoryRecord r;
  r.set_kind(kind);
  r.set_time(UnixSeconds());
  r.set_stage(stage);
  r.set_epoch(epoch);
  r.set_step(step);
  return r;
}

}  // namespace

void Monitor::RecordInterval(const IntervalStats& s) {
  metrics_.RecordInterval(s);
  metrics_.SetResidentMemory(ResidentMemoryBytes());
  if (!history_) return;
  proto::HistoryRecord r = HistoryRecordAt(proto::HistoryRecord::STEP, s.stage, s.epoch, s.step);
  for (const auto& [name, value] : s.losses) (*r.mutable_losses())[name] = value;
  r.set_lr(s.learning_rate);
  r.set_images_per_s(s.images_per_second);
  r.set_data_wait_fraction(s.data_wait_fraction);
  AppendHistory(r);
}

void Monitor::RecordEval(const EvalStats& s) {
  metrics_.RecordEval(s);
  have_eval_ = true;
  last_map_ = s.map;
  last_rank1_ = s.cmc.empty() ? 0.0 : s.cmc[0];
  if (!history_) return;
  proto::HistoryRecord r = HistoryRecordAt(proto::HistoryRecord::EVAL, s.stage, s.epoch, s.step);
  r.set_map(s.map);
  for (size_t i = 0; i < s.cmc.size() && i < 10; ++i) r.add_cmc(s.cmc[i]);
  AppendHistory(r);
}

void Monitor::AppendHistory(const proto::HistoryRecord& r) {
  const Status st = history_->Append(r);
  if (!st.ok() && !history_failed_) Warn(st.message() + " (not repeated)");
  history_failed_ = history_failed_ || !st.ok();
}

void Monitor::Finish(ExitReason reason, int exit_status) {
  if (finished_) return;
  finished_ = true;
  metrics_.SetResidentMemory(ResidentMemoryBytes());
  if (options_.rank == 0) RecordAndPushOutcome(reason, exit_status);
  // The last values (the final step's progress, the outcome) for the scraper; only after a run
  // that finished: a stopped one must exit within the scheduler's grace time (SLURM's KillWait,
  // 30 s by default) with its exit status, and a failed one says why in its log.
  const double wait_s = options_.config.final_scrape_wait_s();
  if (reason == ExitReason::kFinished && exporter_ && wait_s > 0 &&
      exporter_->AwaitNextScrape(std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000)))) {
    LOG(INFO) << "monitoring: the final values were scraped from " << exporter_address_;
  }
}

void Monitor::RecordAndPushOutcome(ExitReason reason, int exit_status) {
  RunOutcome outcome;
  outcome.exit_reason = ExitReasonName(reason);
  outcome.exit_status = exit_status;
  outcome.duration_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  outcome.have_eval = have_eval_;
  outcome.map = last_map_;
  outcome.rank1 = last_rank1_;
  if (reason == ExitReason::kFinished) outcome.last_success_unix_seconds = UnixSeconds();
  metrics_.RecordOutcome(outcome);
  if (!pusher_) return;
  Status s = pusher_->PushAndWait(options_.final_push_timeout);
  if (s.ok()) {
    LOG(INFO) << "monitoring: pushed the run's outcome (" << outcome.exit_reason << ", status "
              << exit_status << ") to " << pusher_->url();
  } else {
    Warn(s.message() + "; the run's outcome may be lost");
  }
  pusher_.reset();
}

}  // namespace reid::monitoring
