// The exporter serves the registry over HTTP, also in a process with a large static TLS (as
// `reid train` is, where prometheus-cpp's Exposer cannot start its threads); a taken port is an
// error that names the port and the way out (the Monitor turns it into a warning).
#include "monitoring/exporter.h"

#include <gtest/gtest.h>
#include <prometheus/gauge.h>

#include <chrono>
#include <thread>

#include "base/status_test_util.h"
#include "monitoring/test_http.h"

// 256 KiB of static TLS, more than LibTorch + OpenBLAS + glog bring into `reid train` (122 KiB):
// civetweb's 100 KiB thread stacks would not fit.
thread_local char big_tls[256 * 1024];

namespace reid::monitoring {
namespace {

std::shared_ptr<prometheus::Registry> OneGauge() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge().Name("reid_test_value").Help("t").Register(*registry).Add({}).Set(42);
  return registry;
}

TEST(ExporterTest, ServesTheRegistry) {
  big_tls[0] = 1;  // keeps the TLS block
  auto registry = OneGauge();
  const int port = testing::FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry);
  ASSERT_OK(exporter);
  EXPECT_EQ((*exporter)->address(), "127.0.0.1:" + std::to_string(port));
  for (int i = 0; i < 3; ++i) {  // connection after connection
    const std::string body = testing::HttpGet(port, "/metrics");
    EXPECT_NE(body.find("# TYPE reid_test_value gauge\nreid_test_value 42\n"), std::string::npos)
        << body;
  }
  EXPECT_EQ(testing::HttpGet(port, "/other"), "");  // 404
}

// The end of a run waits for one scrape that reads the registry after the call, bounded by the
// observed interval; an exporter scraped fewer than two times does not wait.
TEST(ExporterTest, AwaitNextScrapeSeesTheFinalValue) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& gauge =
      prometheus::BuildGauge().Name("reid_test_value").Help("t").Register(*registry).Add({});
  const int port = testing::FreePort();
  auto exporter = Exporter::Start("127.0.0.1", port, registry);
  ASSERT_OK(exporter);
  Exporter& e = **exporter;
  EXPECT_FALSE(e.AwaitNextScrape(std::chrono::seconds(5)));  // never scraped: no wait
  gauge.Set(1);
  for (int i = 0; i < 2; ++i) testing::HttpGet(port, "/metrics");
  EXPECT_EQ(e.scrapes(), 2);
  gauge.Set(2);  // the final value
  std::string seen;
  std::thread scraper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    seen = testing::HttpGet(port, "/metrics");
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(e.AwaitNextScrape(std::chrono::seconds(5)));
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  scraper.join();
  EXPECT_NE(seen.find("reid_test_value 2\n"), std::string::npos) << seen;
  EXPECT_GE(waited, 0.25);
  EXPECT_EQ(e.scrapes(), 3);
  // Nobody scrapes again: the wait ends after two intervals + 1 s, well before the cap.
  const auto t1 = std::chrono::steady_clock::now();
  EXPECT_FALSE(e.AwaitNextScrape(std::chrono::seconds(60)));
  const double gave_up =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  EXPECT_GE(gave_up, 1.0);
  EXPECT_LT(gave_up, 10.0);
  EXPECT_FALSE(e.AwaitNextScrape(std::chrono::milliseconds(0)));  // 0: off
}

TEST(ExporterTest, PortIsFreeAgainAfterwards) {
  auto registry = OneGauge();
  const int port = testing::FreePort();
  for (int i = 0; i < 2; ++i) {  // a restarted run gets its port back (scraped: TIME_WAIT)
    auto exporter = Exporter::Start("127.0.0.1", port, registry);
    ASSERT_OK(exporter);
    EXPECT_NE(testing::HttpGet(port, "/metrics"), "");
  }
}

TEST(ExporterTest, TakenPortNamesThePortAndTheWayOut) {
  testing::SilentListener taken;
  auto exporter = Exporter::Start("127.0.0.1", taken.port(), OneGauge());
  ASSERT_FALSE(exporter.ok());
  const std::string& m = exporter.status().message();
  EXPECT_NE(m.find("127.0.0.1:" + std::to_string(taken.port())), std::string::npos) << m;
  EXPECT_NE(m.find("Address already in use"), std::string::npos) << m;
  EXPECT_NE(m.find("monitoring.metrics_port_base"), std::string::npos) << m;
  EXPECT_NE(m.find("metrics_port_base: 0"), std::string::npos) << m;
}

TEST(ExporterTest, BadBindAddressIsAnError) {
  auto exporter = Exporter::Start("no-such-host.invalid", testing::FreePort(), OneGauge());
  EXPECT_FALSE(exporter.ok());
}

TEST(ExporterTest, ListenAddressBracketsIpv6) {
  EXPECT_EQ(ListenAddress("127.0.0.1", 9400), "127.0.0.1:9400");
  EXPECT_EQ(ListenAddress("::1", 9401), "[::1]:9401");
  EXPECT_EQ(ListenAddress("[::]", 9402), "[::]:9402");
}

}  // namespace
}  // namespace reid::monitoring
