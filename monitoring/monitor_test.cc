// Monitor: the exporter per rank (local rank offsets the port), rank 0's history file and
// end-of-run push, and warnings instead of failures.
#include "monitoring/monitor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "monitoring/test_http.h"

namespace reid::monitoring {
namespace {

using Clock = std::chrono::steady_clock;

std::string TempDir() {
  const auto dir =
      std::filesystem::temp_directory_path() / ("reid_monitor_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

MonitorOptions Options(int rank, int port_base, const std::string& gateway_url = "") {
  MonitorOptions o;
  o.rank = rank;
  o.local_rank = rank;
  o.world_size = 2;
  o.run_label = "run-a";
  o.torch_version = "1.13.1";
  o.config.set_metrics_port_base(port_base);
  o.config.set_metrics_bind("127.0.0.1");
  o.config.set_job("reid_train");
  o.config.set_pushgateway_url(gateway_url);
  o.final_push_timeout = std::chrono::milliseconds(1000);
  return o;
}

IntervalStats Interval() {
  IntervalStats s;
  s.stage = 1;
  s.step = 5;
  s.losses = {{"total", 2.0}, {"supcon", 2.0}};
  s.learning_rate = 1e-3;
  return s;
}

int CountLines(const std::string& path) {
  std::ifstream in(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

TEST(MonitorTest, ExporterPortIsBasePlusLocalRank) {
  const int base = testing::FreePort() - 1;  // base + local rank 1 is the free one
  Monitor m(Options(1, base));
  ASSERT_EQ(m.exporter_address(), "127.0.0.1:" + std::to_string(base + 1));
  m.RecordInterval(Interval());
  const std::string body = testing::HttpGet(base + 1, "/metrics");
  EXPECT_NE(body.find("reid_loss{run=\"run-a\",loss=\"supcon\",rank=\"1\",stage=\"1\"} 2"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("reid_process_resident_memory_bytes{run=\"run-a\",rank=\"1\"}"),
            std::string::npos);
  EXPECT_TRUE(m.warnings().empty());
}

// A finished run's exporter, scraped before, waits for one more scrape so that its last values
// are seen; a run stopped by a signal does not wait (it must exit within the grace time).
TEST(MonitorTest, OnlyAFinishedRunWaitsForTheFinalScrape) {
  for (const ExitReason reason : {ExitReason::kFinished, ExitReason::kPreempted}) {
    const int port = testing::FreePort();
    Monitor m(Options(1, port - 1));  // rank 1: base + 1
    ASSERT_EQ(m.exporter_address(), "127.0.0.1:" + std::to_string(port));
    testing::HttpGet(port, "/metrics");
    std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a 0.6 s scrape interval
    testing::HttpGet(port, "/metrics");
    std::atomic<bool> asked{false};
    // Finished: the wait (up to 2 x 0.6 + 1 s) ends with this scrape, so it has been asked for
    // when Finish returns. Preempted: Finish returns at once, long before it is asked for (a wait
    // would last until then).
    const int delay_ms = reason == ExitReason::kFinished ? 300 : 1000;
    std::thread scraper([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      asked = true;
      testing::HttpGet(port, "/metrics");
    });
    m.Finish(reason, reason == ExitReason::kFinished ? 0 : 75);
    EXPECT_EQ(asked.load(), reason == ExitReason::kFinished) << ExitReasonName(reason);
    scraper.join();
  }
}

TEST(MonitorTest, TakenPortIsAWarningAndTheRunGoesOn) {
  testing::SilentListener taken;
  Monitor m(Options(0, taken.port()));
  EXPECT_EQ(m.exporter_address(), "");
  ASSERT_EQ(m.warnings().size(), 1u);
  EXPECT_NE(m.warnings()[0].find(std::to_string(taken.port())), std::string::npos);
  EXPECT_NE(m.warnings()[0].find("metrics_port_base"), std::string::npos);
  m.RecordStep(StepStats());  // still records
  m.Finish(ExitReason::kFinished, 0);
  EXPECT_NE(m.metrics().OutcomeText().find("reid_run_exit_reason_info{reason=\"finished\"} 1"),
            std::string::npos);
}

TEST(MonitorTest, RankZeroWritesHistoryOthersDoNot) {
  const std::string dir = TempDir();
  for (int rank : {0, 1}) {
    MonitorOptions o = Options(rank, 0);
    o.history_path = dir + "/history" + std::to_string(rank) + ".jsonl";
    std::filesystem::remove(o.history_path);
    Monitor m(o);
    m.RecordInterval(Interval());
    m.RecordEval({2, 1, 7, 0.5, {0.6, 0.7}});
    m.RecordInterval(Interval());
    EXPECT_EQ(CountLines(o.history_path), rank == 0 ? 3 : 0) << "rank " << rank;
  }
}

TEST(MonitorTest, FinishPushesTheOutcomeOnly) {
  testing::FakePushgateway gateway;
  {
    Monitor m(Options(0, 0, "http://127.0.0.1:" + std::to_string(gateway.port())));
    m.RecordInterval(Interval());
    m.RecordEval({2, 1, 7, 0.5, {0.6, 0.7}});
    m.Finish(ExitReason::kPreempted, 75);
    EXPECT_TRUE(m.warnings().empty());
  }
  const auto requests = gateway.requests();
  ASSERT_EQ(requests.size(), 1u);
  const std::string& r = requests[0];
  EXPECT_EQ(r.rfind("POST /metrics/job/reid_train/run/run-a ", 0), 0u) << r;
  EXPECT_NE(r.find("reid_run_exit_reason_info{reason=\"preempted\"} 1\n"), std::string::npos) << r;
  EXPECT_NE(r.find("reid_run_exit_status 75\n"), std::string::npos) << r;
  EXPECT_NE(r.find("reid_run_map_ratio 0.5\n"), std::string::npos) << r;
  EXPECT_NE(r.find("reid_run_rank1_ratio 0.6"), std::string::npos) << r;
  EXPECT_NE(r.find("reid_run_duration_seconds "), std::string::npos) << r;
  EXPECT_EQ(r.find("reid_run_last_success_timestamp_seconds"), std::string::npos) << r;
  EXPECT_EQ(r.find("reid_loss"), std::string::npos) << r;  // live series are scraped, not pushed
  EXPECT_EQ(r.find("reid_build_info"), std::string::npos) << r;
}

TEST(MonitorTest, OtherRanksDoNotPush) {
  testing::FakePushgateway gateway;
  {
    Monitor m(Options(1, 0, "http://127.0.0.1:" + std::to_string(gateway.port())));
    m.Finish(ExitReason::kFinished, 0);
  }
  EXPECT_TRUE(gateway.requests().empty());
}

TEST(MonitorTest, AnUnfinishedRunPushesError) {
  testing::FakePushgateway gateway;
  { Monitor m(Options(0, 0, "http://127.0.0.1:" + std::to_string(gateway.port()))); }
  const auto requests = gateway.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_NE(requests[0].find("reid_run_exit_reason_info{reason=\"error\"} 1\n"), std::string::npos);
  EXPECT_NE(requests[0].find("reid_run_exit_status 1\n"), std::string::npos);
}

TEST(MonitorTest, BlackholedGatewayCostsAtMostTheTimeout) {
  testing::SilentListener blackhole;
  const auto start = Clock::now();
  {
    Monitor m(Options(0, 0, "http://127.0.0.1:" + std::to_string(blackhole.port())));
    m.Finish(ExitReason::kFinished, 0);
    ASSERT_EQ(m.warnings().size(), 1u);
    EXPECT_NE(m.warnings()[0].find("did not answer within 1.0 s"), std::string::npos)
        << m.warnings()[0];
  }
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(s, 2.0);
}

}  // namespace
}  // namespace reid::monitoring
