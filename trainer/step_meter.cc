#include "trainer/step_meter.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstdio>

namespace reid::trainer {
namespace {

double Seconds(StepMeter::Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

std::string FormatDuration(double s) {
  char buf[32];
  const int64_t t = static_cast<int64_t>(std::max(0.0, s));
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  }
  return buf;
}

StepMeter::StepMeter(MeterOptions options, MeterProbes probes, monitoring::Monitor* monitor,
                     std::ostream* progress, Clock::time_point now)
    : options_(std::move(options)),
      probes_(std::move(probes)),
      monitor_(monitor),
      progress_(progress),
      stage_start_(now),
      last_log_(now) {
  sync_wait_seen_ = Probe(probes_.sync_wait_s);
  sync_comm_seen_ = Probe(probes_.sync_comm_s);
  sync_steps_seen_ = probes_.sync_steps ? probes_.sync_steps() : 0;
  interval_.start = now;
}

StepMeter::StepStart StepMeter::StartStep(Clock::time_point now) const {
  return {now, Probe(probes_.comm_wait_s)};
}

void StepMeter::EndStep(const StepStart& start, const StepResult& r, Clock::time_point now) {
  ++steps_done_;
  log_images_ += r.global_images;
  log_data_wait_s_ += r.data_wait_s;
  const double sync_wait = Probe(probes_.sync_wait_s), sync_comm = Probe(probes_.sync_comm_s);
  const int64_t sync_steps = probes_.sync_steps ? probes_.sync_steps() : 0;
  if (monitor_ != nullptr) {
    monitoring::StepStats step;
    step.stage = options_.stage;
    step.epoch = r.epoch;
    step.images = r.images;
    step.step_seconds = Seconds(now - start.start);
    step.data_wait_seconds = r.data_wait_s;
    step.allreduce_seconds = sync_wait - sync_wait_seen_ + r.loss_allreduce_s;
    step.other_collective_seconds =
        std::max(0.0, Probe(probes_.comm_wait_s) - start.comm_wait_s - r.loss_allreduce_s);
    step.skipped_nonfinite = r.skipped_nonfinite;
    monitor_->RecordStep(step);
    interval_.images += r.images;
    interval_.data_wait_s += r.data_wait_s;
    interval_.comm_s += sync_comm - sync_comm_seen_;
    interval_.comm_bytes +=
        static_cast<double>(sync_steps - sync_steps_seen_) * Probe(probes_.sync_total_bytes);
    const bool own_period = options_.metrics_every > 0;
    const int every = own_period ? options_.metrics_every : options_.log_period;
    const bool last_of_epoch = r.step == r.steps;
    if (++interval_.steps % std::max(1, every) == 0 || (last_of_epoch && !own_period)) {
      EndInterval(r, now);
    }
  }
  sync_wait_seen_ = sync_wait;
  sync_comm_seen_ = sync_comm;
  sync_steps_seen_ = sync_steps;
  if (r.step % std::max(1, options_.log_period) == 0 || r.step == r.steps) Progress(r, now);
}

void StepMeter::EndInterval(const StepResult& r, Clock::time_point now) {
  const double seconds = Seconds(now - interval_.start);
  const int n = options_.world_size;
  monitoring::IntervalStats s;
  s.stage = options_.stage;
  s.epoch = r.epoch;
  s.step = r.global_step;
  for (const auto& [label, index] : options_.metric_losses) {
    if (index >= 0 && static_cast<size_t>(index) < r.losses.size()) {
      s.losses.emplace_back(label, r.losses[index]);
    }
  }
  s.learning_rate = r.learning_rate;
  s.images_per_second = seconds > 0 ? interval_.images * n / seconds : 0.0;  // shards are equal
  s.data_wait_fraction = seconds > 0 ? std::min(1.0, interval_.data_wait_s / seconds) : 0.0;
  s.loss_scale = r.loss_scale;
  if (n > 1 && interval_.comm_s > 0) {  // nccl-tests' bus bandwidth of an all-reduce
    s.bus_bandwidth_bytes_per_second = interval_.comm_bytes * 2.0 * (n - 1) / n / interval_.comm_s;
  }
  if (probes_.gpu_memory) probes_.gpu_memory(&s.gpu_allocated_bytes, &s.gpu_reserved_bytes);
  monitor_->RecordInterval(s);
  interval_ = Interval();
  interval_.start = now;
}

void StepMeter::Progress(const StepResult& r, Clock::time_point now) {
  const double interval = Seconds(now - last_log_);
  const double elapsed = Seconds(now - stage_start_);
  const double eta =
      elapsed / static_cast<double>(steps_done_) * static_cast<double>(options_.total_steps -
                                                                       steps_done_);
  char buf[512];
  int n = std::snprintf(buf, sizeof(buf), "stage %d epoch %d/%d step %lld/%lld | loss %.4f",
                        options_.stage, r.epoch, options_.max_epochs,
                        static_cast<long long>(r.step), static_cast<long long>(r.steps),
                        r.losses.empty() ? 0.0 : r.losses[0]);
  const auto& names = options_.progress_names;
  if (names.size() > 1) {
    n += std::snprintf(buf + n, sizeof(buf) - n, " (");
    for (size_t i = 1; i < names.size() && i < r.losses.size(); ++i) {
      n += std::snprintf(buf + n, sizeof(buf) - n, "%s%s %.4f", i > 1 ? " " : "",
                         names[i].c_str(), r.losses[i]);
    }
    n += std::snprintf(buf + n, sizeof(buf) - n, ")");
  }
  std::snprintf(buf + n, sizeof(buf) - n, " | lr %.2e | %.0f img/s | data %.0f%% | eta %s",
                r.learning_rate, interval > 0 ? log_images_ / interval : 0.0,
                interval > 0 ? 100.0 * log_data_wait_s_ / interval : 0.0,
                FormatDuration(std::max(0.0, eta)).c_str());
  last_progress_ = buf;
  LOG(INFO) << buf;
  if (progress_ != nullptr) *progress_ << buf << std::endl;
  last_log_ = now;
  log_images_ = 0;
  log_data_wait_s_ = 0;
}

}  // namespace reid::trainer
