// The exporter serves the registry over HTTP, also in a process with a large static TLS (as
// `reid train` is, where prometheus-cpp's Exposer cannot start its threads); a taken port is an
// error that names the port and the way out (the Monitor turns it into a warning).
#include "monitoring/exporter.h"

#include <gtest/gtest.h>
#include <prometheus/gauge.h>

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
