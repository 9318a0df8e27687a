// The exposition text of the reid_ metrics: names, labels, types and values as the dashboard
// and alert rules query them.
#include "monitoring/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
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
  Metrics m("r", 3, Facts());
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
  EXPECT_EQ(Value(t, "reid_samples_total{run=\"r\",rank=\"3\",stage=\"2\"}"), 32);
  EXPECT_EQ(Value(t, "reid_steps_total{run=\"r\",rank=\"3\",stage=\"2\"}"), 2);
  EXPECT_EQ(Value(t, "reid_nonfinite_steps_skipped_total{run=\"r\",rank=\"3\",stage=\"2\"}"), 1);
  EXPECT_EQ(Value(t, "reid_epoch{run=\"r\",rank=\"3\",stage=\"2\"}"), 7);
  EXPECT_EQ(Value(t, "reid_step_seconds_count{run=\"r\",rank=\"3\",stage=\"2\"}"), 2);
  EXPECT_DOUBLE_EQ(Value(t, "reid_step_seconds_sum{run=\"r\",rank=\"3\",stage=\"2\"}"), 1.0);
  EXPECT_EQ(Value(t, "reid_step_seconds_bucket{run=\"r\",rank=\"3\",stage=\"2\",le=\"0.5\"}"), 2);
  EXPECT_EQ(Value(t, "reid_step_seconds_bucket{run=\"r\",rank=\"3\",stage=\"2\",le=\"0.25\"}"), 0);
  // Compute = step time outside the collectives.
  EXPECT_NEAR(Value(t, "reid_compute_seconds_sum{run=\"r\",rank=\"3\",stage=\"2\"}"), 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(Value(t, "reid_allreduce_seconds_sum{run=\"r\",rank=\"3\",stage=\"2\"}"), 0.4);
  EXPECT_DOUBLE_EQ(Value(t, "reid_data_wait_seconds_sum{run=\"r\",rank=\"3\",stage=\"2\"}"), 0.04);
  EXPECT_GT(Value(t, "reid_last_step_timestamp_seconds{run=\"r\",rank=\"3\"}"), 1.6e9);
  // Stage 1 has its own series.
  EXPECT_TRUE(std::isnan(Value(t, "reid_steps_total{run=\"r\",rank=\"3\",stage=\"1\"}")));
}

TEST(MetricsTest, IntervalSetsLossesLearningRateAndScale) {
  Metrics m("r", 0, Facts());
  IntervalStats s;
  s.stage = 2;
  s.losses = {{"total", 3.5}, {"id", 1.0}, {"triplet", 2.0}, {"i2t", 0.5}};
  s.learning_rate = 5e-6;
  s.loss_scale = 65536;
  m.RecordInterval(s);
  std::string t = m.ExpositionText();
  EXPECT_TRUE(HasFamily(t, "reid_loss", "gauge"));
  EXPECT_EQ(Value(t, "reid_loss{run=\"r\",loss=\"total\",rank=\"0\",stage=\"2\"}"), 3.5);
  EXPECT_EQ(Value(t, "reid_loss{run=\"r\",loss=\"triplet\",rank=\"0\",stage=\"2\"}"), 2.0);
  EXPECT_EQ(Value(t, "reid_learning_rate{run=\"r\",rank=\"0\",stage=\"2\"}"), 5e-6);
  EXPECT_EQ(Value(t, "reid_loss_scale{run=\"r\",rank=\"0\",stage=\"2\"}"), 65536);
  // Not measured (one rank, CPU): not exported rather than a fake 0.
  EXPECT_TRUE(std::isnan(
      Value(t, "reid_allreduce_bus_bandwidth_bytes_per_second{run=\"r\",rank=\"0\",stage=\"2\"}")));
  EXPECT_TRUE(std::isnan(Value(t, "reid_gpu_memory_allocated_bytes{run=\"r\",rank=\"0\"}")));
  s.losses = {{"total", 2.5}};
  s.bus_bandwidth_bytes_per_second = 1e9;
  s.gpu_allocated_bytes = 1024;
  s.gpu_reserved_bytes = 2048;
  m.RecordInterval(s);
  t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_loss{run=\"r\",loss=\"total\",rank=\"0\",stage=\"2\"}"), 2.5);
  EXPECT_EQ(
      Value(t, "reid_allreduce_bus_bandwidth_bytes_per_second{run=\"r\",rank=\"0\",stage=\"2\"}"),
      1e9);
  EXPECT_EQ(Value(t, "reid_gpu_memory_allocated_bytes{run=\"r\",rank=\"0\"}"), 1024);
  EXPECT_EQ(Value(t, "reid_gpu_memory_reserved_bytes{run=\"r\",rank=\"0\"}"), 2048);
}

TEST(MetricsTest, EvaluationsKeepTheBest) {
  Metrics m("r", 1, Facts());
  EXPECT_TRUE(std::isnan(Value(m.ExpositionText(), "reid_eval_map_ratio{run=\"r\",rank=\"1\"}")));
  EXPECT_EQ(Value(m.ExpositionText(), "reid_evals_total{run=\"r\",rank=\"1\"}"), 0);
  m.RecordEval({2, 1, 10, 0.6, {0.7, 0.8}});
  m.RecordEval({2, 2, 20, 0.5, {0.75}});
  const std::string t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_eval_map_ratio{run=\"r\",rank=\"1\"}"), 0.5);
  EXPECT_EQ(Value(t, "reid_eval_rank1_ratio{run=\"r\",rank=\"1\"}"), 0.75);
  EXPECT_EQ(Value(t, "reid_eval_best_map_ratio{run=\"r\",rank=\"1\"}"), 0.6);
  EXPECT_EQ(Value(t, "reid_eval_best_rank1_ratio{run=\"r\",rank=\"1\"}"), 0.75);
  EXPECT_EQ(Value(t, "reid_evals_total{run=\"r\",rank=\"1\"}"), 2);
}

TEST(MetricsTest, CheckpointsUnreadableMemoryAndBuildInfo) {
  Metrics m("r", 2, Facts());
  m.RecordCheckpoint(1.7e9, 12345);
  m.RecordUnreadable(2);
  m.RecordUnreadable(0);
  m.RecordUnreadable(1);
  m.SetResidentMemory(4096);
  const std::string t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_checkpoint_last_timestamp_seconds{run=\"r\",rank=\"2\"}"), 1.7e9);
  EXPECT_EQ(Value(t, "reid_checkpoint_last_size_bytes{run=\"r\",rank=\"2\"}"), 12345);
  EXPECT_EQ(Value(t, "reid_unreadable_images_total{run=\"r\",rank=\"2\"}"), 3);
  EXPECT_EQ(Value(t, "reid_process_resident_memory_bytes{run=\"r\",rank=\"2\"}"), 4096);
  EXPECT_EQ(Value(t,
                  "reid_build_info{run=\"r\",git_sha=\"abc123\",rank=\"2\",torch=\"1.13.1\","
                  "version=\"0.1.0\",world_size=\"4\"}"),
            1);
}

TEST(MetricsTest, EveryLiveSeriesNamesTheRunAndRank) {
  Metrics m("run-7", 1, Facts());
  StepStats step;
  m.RecordStep(step);
  IntervalStats interval;
  interval.losses = {{"total", 1}};
  interval.bus_bandwidth_bytes_per_second = 1;
  interval.gpu_allocated_bytes = interval.gpu_reserved_bytes = 1;
  m.RecordInterval(interval);
  m.RecordEval({2, 1, 1, 0.5, {0.5}});
  m.RecordCheckpoint(1, 1);
  m.SetGpuMemoryTotal(8);
  m.StartStage({1, 0, 10, 2});
  std::istringstream in(m.ExpositionText());
  int series = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    ++series;
    EXPECT_NE(line.find("run=\"run-7\""), std::string::npos) << line;
    EXPECT_NE(line.find("rank=\"1\""), std::string::npos) << line;
  }
  EXPECT_GT(series, 100);  // histograms' buckets included
}

TEST(MetricsTest, StageProgressCountsStepsFromTheResumedPosition) {
  Metrics m("r", 0, Facts());
  StepStats s;
  s.stage = 2;
  m.RecordStep(s);  // before StartStage: no progress series yet
  std::string t = m.ExpositionText();
  EXPECT_TRUE(std::isnan(Value(t, "reid_stage_done_steps{run=\"r\",rank=\"0\",stage=\"2\"}")));
  m.StartStage({2, 40, 120, 60});  // resumed 40 steps in
  m.RecordStep(s);
  m.RecordStep(s);
  t = m.ExpositionText();
  EXPECT_EQ(Value(t, "reid_stage_done_steps{run=\"r\",rank=\"0\",stage=\"2\"}"), 42);
  EXPECT_EQ(Value(t, "reid_stage_planned_steps{run=\"r\",rank=\"0\",stage=\"2\"}"), 120);
  EXPECT_EQ(Value(t, "reid_stage_planned_epochs{run=\"r\",rank=\"0\",stage=\"2\"}"), 60);
  EXPECT_GT(Value(t, "reid_process_start_time_seconds{run=\"r\",rank=\"0\"}"), 1.6e9);
  EXPECT_TRUE(std::isnan(Value(t, "reid_gpu_memory_total_bytes{run=\"r\",rank=\"0\"}")));
  m.SetGpuMemoryTotal(-1);  // not a GPU
  EXPECT_EQ(m.ExpositionText().find("reid_gpu_memory_total_bytes"), std::string::npos);
  m.SetGpuMemoryTotal(80e9);
  EXPECT_EQ(Value(m.ExpositionText(), "reid_gpu_memory_total_bytes{run=\"r\",rank=\"0\"}"), 80e9);
}

TEST(MetricsTest, OutcomeIsApartAndHasTheLastSuccessOnlyOnSuccess) {
  Metrics failed("r", 0, Facts());
  EXPECT_EQ(failed.OutcomeText(), "");
  RunOutcome s;
  s.exit_reason = "error";
  s.exit_status = 1;
  s.duration_seconds = 12;
  failed.RecordOutcome(s);
  std::string t = failed.OutcomeText();
  EXPECT_EQ(Value(t, "reid_run_exit_reason_info{reason=\"error\"}"), 1);
  EXPECT_EQ(Value(t, "reid_run_exit_status"), 1);
  EXPECT_EQ(Value(t, "reid_run_duration_seconds"), 12);
  EXPECT_EQ(t.find("reid_run_last_success_timestamp_seconds"), std::string::npos);
  EXPECT_EQ(t.find("reid_run_map_ratio"), std::string::npos);  // no evaluation: not exported
  EXPECT_EQ(failed.ExpositionText().find("reid_run_"), std::string::npos);  // not scraped

  Metrics done("r", 0, Facts());
  s.exit_reason = "finished";
  s.exit_status = 0;
  s.have_eval = true;
  s.map = 0.8;
  s.rank1 = 0.9;
  s.last_success_unix_seconds = 1.7e9;
  done.RecordOutcome(s);
  t = done.OutcomeText();
  EXPECT_EQ(Value(t, "reid_run_exit_reason_info{reason=\"finished\"}"), 1);
  EXPECT_EQ(Value(t, "reid_run_exit_status"), 0);
  EXPECT_EQ(Value(t, "reid_run_map_ratio"), 0.8);
  EXPECT_EQ(Value(t, "reid_run_rank1_ratio"), 0.9);
  EXPECT_EQ(Value(t, "reid_run_last_success_timestamp_seconds"), 1.7e9);
  // Only the outcome: no live family in the pushed registry, no run or rank label (the
  // Pushgateway's grouping key adds job and run).
  std::istringstream in(t);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_EQ(line.rfind("reid_run_", 0), 0u) << line;
    EXPECT_EQ(line.find("rank="), std::string::npos) << line;
    EXPECT_EQ(line.find("run="), std::string::npos) << line;
  }
}

// Every family of a run that exercised everything, scraped and pushed, against
// monitoring/metrics.txt (the list the dashboard and the rules are checked with): the same names,
// types, labels and source, and nothing listed that is never exported.
TEST(MetricsTest, ExportsExactlyTheListedFamilies) {
  struct Listed {
    std::string type, labels, source;
  };
  std::map<std::string, Listed> listed;
  std::ifstream file("monitoring/metrics.txt");  // tests run from the repository root
  ASSERT_TRUE(file) << "monitoring/metrics.txt";
  for (std::string line; std::getline(file, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string name;
    Listed l;
    fields >> name >> l.type >> l.labels >> l.source;
    listed[name] = l;
  }
  Metrics m("r", 0, Facts());
  StepStats step;
  m.RecordStep(step);
  IntervalStats interval;
  interval.losses = {{"total", 1}};
  interval.bus_bandwidth_bytes_per_second = 1;
  interval.gpu_allocated_bytes = interval.gpu_reserved_bytes = 1;
  m.RecordInterval(interval);
  m.RecordEval({2, 1, 1, 0.5, {0.5}});
  m.RecordCheckpoint(1, 1);
  m.SetGpuMemoryTotal(8);
  m.StartStage({1, 0, 10, 2});
  RunOutcome outcome;
  outcome.exit_reason = "finished";
  outcome.have_eval = true;
  outcome.last_success_unix_seconds = 1;
  m.RecordOutcome(outcome);
  std::set<std::string> exported;
  for (const auto& [text, source] : {std::pair{m.ExpositionText(), std::string("scrape")},
                                     std::pair{m.OutcomeText(), std::string("push")}}) {
    std::istringstream in(text);
    std::string type_of_last;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("# TYPE ", 0) == 0) {
        std::istringstream t(line.substr(7));
        std::string name, type;
        t >> name >> type;
        exported.insert(name);
        ASSERT_TRUE(listed.count(name)) << name << " is not in monitoring/metrics.txt";
        EXPECT_EQ(listed[name].type, type) << name;
        EXPECT_EQ(listed[name].source, source) << name;
        continue;
      }
      if (line.empty() || line[0] == '#') continue;
      // name{labels} value: every label but le must be listed; the listed ones all present.
      const size_t brace = line.find('{');
      std::string name = line.substr(0, std::min(brace, line.find(' ')));
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string sfx(suffix);
        if (!listed.count(name) && name.size() > sfx.size() &&
            name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
          name = name.substr(0, name.size() - sfx.size());
        }
      }
      std::set<std::string> labels;
      if (brace != std::string::npos) {
        std::istringstream body(line.substr(brace + 1, line.find('}') - brace - 1));
        for (std::string pair; std::getline(body, pair, ',');) {
          const std::string label = pair.substr(0, pair.find('='));
          if (label != "le") labels.insert(label);
        }
      }
      if (source == "push") labels.insert("run");  // the grouping key's
      std::set<std::string> want;
      std::istringstream l(listed[name].labels);
      for (std::string label; std::getline(l, label, ',');) {
        if (label != "-") want.insert(label);
      }
      EXPECT_EQ(labels, want) << line;
    }
  }
  for (const auto& [name, l] : listed)
    EXPECT_TRUE(exported.count(name)) << name << " is never exported";
}

}  // namespace
}  // namespace reid::monitoring
