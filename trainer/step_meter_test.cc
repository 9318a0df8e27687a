#include "trainer/step_meter.h"

#include <gtest/gtest.h>

#include <sstream>

namespace reid::trainer {
namespace {

using Clock = StepMeter::Clock;
using std::chrono::milliseconds;

MeterOptions Options(int64_t total_steps) {
  MeterOptions o;
  o.stage = 2;
  o.max_epochs = 3;
  o.log_period = 2;
  o.world_size = 2;
  o.total_steps = total_steps;
  o.progress_names = {"loss", "id", "tri", "i2t"};
  o.metric_losses = {{"total", 0}, {"id", 1}, {"triplet", 2}, {"i2t", 3}};
  return o;
}

StepResult Result(int64_t step, int64_t steps) {
  StepResult r;
  r.epoch = 1;
  r.step = step;
  r.steps = steps;
  r.losses = {1.5, 0.5, 0.25, 0.75};
  r.images = 16;
  r.global_images = 32;
  r.data_wait_s = 0.25;
  r.learning_rate = 1e-4;
  r.global_step = step;
  return r;
}

TEST(StepMeter, ProgressLineAtLogPeriodAndEpochEndWithRateAndEta) {
  std::ostringstream out;
  const Clock::time_point t0 = Clock::now();
  StepMeter meter(Options(10), MeterProbes(), nullptr, &out, t0);
  // Steps of one second each, 5 per epoch: lines after steps 2, 4 and 5 (the epoch's last).
  for (int64_t s = 1; s <= 5; ++s) {
    const auto start = meter.StartStep(t0 + milliseconds(1000 * (s - 1)));
    meter.EndStep(start, Result(s, 5), t0 + milliseconds(1000 * s));
    if (s == 1) EXPECT_EQ(out.str(), "");
    if (s == 2) {
      // 64 images over 2 s; 0.5 s of data wait in 2 s; 2 s for 2 of 10 steps: 8 s to go.
      EXPECT_EQ(meter.last_progress(),
                "stage 2 epoch 1/3 step 2/5 | loss 1.5000 (id 0.5000 tri 0.2500 i2t 0.7500) | "
                "lr 1.00e-04 | 32 img/s | data 25% | eta 0m08s");
    }
  }
  EXPECT_EQ(meter.steps_done(), 5);
  std::istringstream lines(out.str());
  std::string line;
  std::vector<std::string> all;
  while (std::getline(lines, line)) all.push_back(line);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_NE(all[1].find("step 4/5"), std::string::npos) << all[1];
  // The epoch's last step: one step since the previous line, 5 s for 5 of 10 steps.
  EXPECT_NE(all[2].find("step 5/5"), std::string::npos) << all[2];
  EXPECT_NE(all[2].find("| 32 img/s |"), std::string::npos) << all[2];
  EXPECT_NE(all[2].find("eta 0m05s"), std::string::npos) << all[2];
}

TEST(StepMeter, NoProgressStreamStillKeepsTheLine) {
  const Clock::time_point t0 = Clock::now();
  StepMeter meter(Options(1), MeterProbes(), nullptr, nullptr, t0);
  meter.EndStep(meter.StartStep(t0), Result(1, 1), t0 + milliseconds(500));
  EXPECT_NE(meter.last_progress().find("step 1/1"), std::string::npos);
  EXPECT_NE(meter.last_progress().find("eta 0m00s"), std::string::npos);
}

TEST(StepMeter, FeedsTheMonitorPerStepAndPerInterval) {
  monitoring::MonitorOptions mo;
  mo.config.set_metrics_port_base(0);  // no exporter, no gateway, no history
  mo.world_size = 2;
  mo.run_label = "meter-test";
  monitoring::Monitor monitor(mo);
  double comm_wait = 0, sync_wait = 0, sync_comm = 0;
  int64_t sync_steps = 0;
  MeterProbes probes;
  probes.comm_wait_s = [&] { return comm_wait; };
  probes.sync_wait_s = [&] { return sync_wait; };
  probes.sync_comm_s = [&] { return sync_comm; };
  probes.sync_steps = [&] { return sync_steps; };
  probes.sync_total_bytes = [] { return 1000.0; };
  MeterOptions o = Options(4);
  o.metrics_every = 3;  // its own period: an interval after 3 steps, none at the epoch's end
  const Clock::time_point t0 = Clock::now();
  StepMeter meter(o, probes, &monitor, nullptr, t0);
  for (int64_t s = 1; s <= 4; ++s) {
    const auto start = meter.StartStep(t0 + milliseconds(1000 * (s - 1)));
    comm_wait += 0.1;
    sync_wait += 0.2;
    sync_comm += 0.5;
    ++sync_steps;
    meter.EndStep(start, Result(s, 4), t0 + milliseconds(1000 * s));
  }
  const std::string text = monitor.metrics().ExpositionText();
  auto has = [&](const std::string& needle) {
    return text.find(needle) != std::string::npos;
  };
  EXPECT_TRUE(has("reid_steps_total{run=\"meter-test\",rank=\"0\",stage=\"2\"} 4")) << text;
  EXPECT_TRUE(has("reid_samples_total{run=\"meter-test\",rank=\"0\",stage=\"2\"} 64")) << text;
  // One interval (after step 3): its losses and rate.
  EXPECT_TRUE(has("reid_loss{run=\"meter-test\",loss=\"triplet\",rank=\"0\",stage=\"2\"} 0.25")) << text;
  EXPECT_TRUE(has("reid_learning_rate{run=\"meter-test\",rank=\"0\",stage=\"2\"} 0.0001")) << text;
}

TEST(FormatDuration, MinutesAndHours) {
  EXPECT_EQ(FormatDuration(0), "0m00s");
  EXPECT_EQ(FormatDuration(-5), "0m00s");
  EXPECT_EQ(FormatDuration(725), "12m05s");
  EXPECT_EQ(FormatDuration(3720), "1h02m");
}

}  // namespace
}  // namespace reid::trainer
