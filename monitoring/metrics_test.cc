// The exposition text of the reid_ metrics: names, labels, types and values as the dashboard
// and alert rules query them.
#include "monitoring/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

namespace reid::monitoring {
namespace {

// The value of the series `series` (name{labels} exactly as exposed), or NaN when absent.
double Value(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nan("");
}

bool HasFamily(const std::string& text, const std::string& name, const std::string& type) {
  return text.find("# TYPE " + name + " " + type + "\n") != std::string::npos;
}

BuildFacts Facts() {
  BuildFacts f;
  f.version = "0.1.0";
  f.git_sha = "abc123";
  f.torch = "1.13.1";
  f.world_size = 4;
  return f;
}

TEST(MetricsTest, StepsFeedCountersHistogramsAndGauges) {
  Metrics m(3, Facts());
  StepStats s;
  s.stage = 2;
  s.epoch = 7;
  s.images = 16;
  s.step_seconds = 0.5;
  s.data_wait_seconds = 0.02;
  s.allreduce_seconds = 0.2;
  s.other_collective_seconds = 0.1;
  m.RecordStep(s);
  s.skipped_nonfinite = true;
  m.RecordStep(s);
  const std::string t = m.ExpositionText();
  EXPECT_TRUE(HasFamily(t, "reid_samples_total", "counter"));
  EXPECT_TRUE(HasFamily(t, "reid_step_seconds", "histogram"));
  EXPECT_EQ(Value(t, "reid_samples_total{rank=\"3\",stage=\"2\"}"), 32);
  EXPECT_EQ(Value(t, "reid_steps_total{rank=\"3\",stage=\"2\"}"), 2);
  EXPECT_EQ(Value(t, "reid_nonfinite_steps_skipped_total{rank=\"3\",stage=\"2\"}"), 1);
  EXPECT_EQ(Value(t, "reid_epoch{rank=\"3\",stage=\"2\"}"), 7);
  EXPECT_EQ(Value(t, "reid_step_seconds_count{rank=\"3\",stage=\"2\"}"), 2);
  EXPECT_DOUBLE_EQ(Value(t, "reid_step_seconds_sum{rank=\"3\",stage=\"2\"}"), 1.0);
  EXPECT_EQ(Value(t, "reid_step_seconds_bucket{rank=\"3\",stage=\"2\",le=\"0.5\"}"), 2);
  EXPECT_EQ(Value(t, "reid_step_seconds_bucket{rank=\"3\",stage=\"2\",le=\"0.25\"}"), 0);
  // Compute = step time outside the collectives.
  EXPECT_NEAR(Value(t, "reid_compute_seconds_sum{rank=\"3\",stage=\"2\"}"), 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(Value(t, "reid_allreduce_seconds_sum{rank=\"3\",stage=\"2\"}"), 0.4);
  EXPECT_DOUBLE_EQ(Value(t, "reid_data_wait_seconds_sum{rank=\"3\",stage=\"2\"}"), 0.04);
  EXPECT_GT(Value(t, "reid_last_step_timestamp_seconds{rank=\"3\"}"), 1.6e9);
  // Stage 1 has its own series.
  EXPECT_TRUE(std::isnan(Value(t, "reid_steps_total{rank=\"3\",stage=\"1\"}")));
}

TEST(MetricsTest, IntervalSetsLossesLearningRateAndScale) {
  Metrics m(0, Facts());
  IntervalStats s;
  s.stage = 2;
  s.losses = {{"total", 3.5}, {"id", 1.0}, {"triplet", 2.0}, {"i2t", 0.5}};
  s.learning_rate = 5e-6;
  s.loss_scale = 65536;
  m.RecordInterval(s);
  std::string t = m.ExpositionText();
  EXPECT_TRUE(HasFamily(t, "reid_loss", "gauge"));
  EXPECT_EQ(Value(t, "reid_loss{loss=\"total\",rank=\"0\",stage=\"2\"}"), 3.5);
  EXPECT_EQ(Value(t, "reid_loss{loss=\"triplet\",rank=\"0\",stage=\"2\"}"), 2.0);
  EXPECT_EQ(Value(t, "reid_learning_rate{rank=\"0\",stage=\"2\"}"), 5e-6);
  EXPECT_EQ(Value(t, "reid_loss_scale{rank=\"0\",stage=\"2\"}"), 65536);
  // Not measured (one rank, CPU): not exported rather than a fake 0.
  EXPECT_TRUE(std::isnan(
      Value(t, "reid_allreduce_bus_bandwidth_bytes_per_second{rank=\"0\",stage=\"2\"}")));
  EXPECT_TRUE(std::isnan(Value(t, "reid_gpu_memory_allocated_bytes{rank=\"0\"}")));
  s.losses = {{"total", 2.5}};
  s.bus_bandwidth_bytes_per_second = 1e9;
  s.gpu_allocated_bytes = 1024;
  s.gpu_reserved_bytes = 2048;
  m.RecordInterval(s);
  t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_loss{loss=\"total\",rank=\"0\",stage=\"2\"}"), 2.5);
  EXPECT_EQ(Value(t, "reid_allreduce_bus_bandwidth_bytes_per_second{rank=\"0\",stage=\"2\"}"), 1e9);
  EXPECT_EQ(Value(t, "reid_gpu_memory_allocated_bytes{rank=\"0\"}"), 1024);
  EXPECT_EQ(Value(t, "reid_gpu_memory_reserved_bytes{rank=\"0\"}"), 2048);
}

TEST(MetricsTest, EvaluationsKeepTheBest) {
  Metrics m(1, Facts());
  EXPECT_TRUE(std::isnan(Value(m.ExpositionText(), "reid_eval_map_ratio{rank=\"1\"}")));
  EXPECT_EQ(Value(m.ExpositionText(), "reid_evals_total{rank=\"1\"}"), 0);
  m.RecordEval({2, 1, 10, 0.6, {0.7, 0.8}});
  m.RecordEval({2, 2, 20, 0.5, {0.75}});
  const std::string t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_eval_map_ratio{rank=\"1\"}"), 0.5);
  EXPECT_EQ(Value(t, "reid_eval_rank1_ratio{rank=\"1\"}"), 0.75);
  EXPECT_EQ(Value(t, "reid_eval_best_map_ratio{rank=\"1\"}"), 0.6);
  EXPECT_EQ(Value(t, "reid_eval_best_rank1_ratio{rank=\"1\"}"), 0.75);
  EXPECT_EQ(Value(t, "reid_evals_total{rank=\"1\"}"), 2);
}

TEST(MetricsTest, CheckpointsUnreadableMemoryAndBuildInfo) {
  Metrics m(2, Facts());
  m.RecordCheckpoint(1.7e9, 12345);
  m.RecordUnreadable(2);
  m.RecordUnreadable(0);
  m.RecordUnreadable(1);
  m.SetResidentMemory(4096);
  const std::string t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_checkpoint_last_timestamp_seconds{rank=\"2\"}"), 1.7e9);
  EXPECT_EQ(Value(t, "reid_checkpoint_last_size_bytes{rank=\"2\"}"), 12345);
  EXPECT_EQ(Value(t, "reid_unreadable_images_total{rank=\"2\"}"), 3);
  EXPECT_EQ(Value(t, "reid_process_resident_memory_bytes{rank=\"2\"}"), 4096);
  EXPECT_EQ(Value(t,
                  "reid_build_info{git_sha=\"abc123\",rank=\"2\",torch=\"1.13.1\","
                  "version=\"0.1.0\",world_size=\"4\"}"),
            1);
}

TEST(MetricsTest, SummaryHasTheLastSuccessOnlyOnSuccess) {
  Metrics failed(0, Facts());
  RunSummary s;
  s.exit_reason = "error";
  s.duration_seconds = 12;
  s.final_losses = {{"total", 1.5}};
  failed.RecordSummary(s);
  std::string t = failed.ExpositionText();
  EXPECT_EQ(Value(t, "reid_run_exit_reason_info{reason=\"error\"}"), 1);
  EXPECT_EQ(Value(t, "reid_run_duration_seconds"), 12);
  EXPECT_EQ(Value(t, "reid_run_final_loss{loss=\"total\"}"), 1.5);
  EXPECT_EQ(t.find("reid_run_last_success_timestamp_seconds"), std::string::npos);
  EXPECT_EQ(t.find("reid_run_map_ratio"), std::string::npos);  // no evaluation: not exported

  Metrics done(0, Facts());
  s.exit_reason = "finished";
  s.have_eval = true;
  s.map = 0.8;
  s.rank1 = 0.9;
  s.last_success_unix_seconds = 1.7e9;
  done.RecordSummary(s);
  t = done.ExpositionText();
  EXPECT_EQ(Value(t, "reid_run_exit_reason_info{reason=\"finished\"}"), 1);
  EXPECT_EQ(Value(t, "reid_run_map_ratio"), 0.8);
  EXPECT_EQ(Value(t, "reid_run_rank1_ratio"), 0.9);
  EXPECT_EQ(Value(t, "reid_run_last_success_timestamp_seconds"), 1.7e9);
}

}  // namespace
}  // namespace reid::monitoring
