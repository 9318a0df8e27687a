// The exporter serves the registry over HTTP; a taken port is an error that names the port and
// the way out (the Monitor turns it into a warning).
#include "monitoring/exporter.h"

#include <gtest/gtest.h>
#include <prometheus/gauge.h>

#include "monitoring/test_http.h"

namespace reid::monitoring {
namespace {

std::shared_ptr<prometheus::Registry> OneGauge() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge().Name("reid_test_value").Help("t").Register(*registry).Add({}).Set(42);
  return registry;
}

TEST(ExporterTest, ServesTheRegistry) {
  auto registry = OneGauge();
  const int port = testing::FreePort();
  auto exposer = StartExporter("127.0.0.1", port, registry);
  ASSERT_TRUE(exposer.ok()) << exposer.status().message();
  const std::string body = testing::HttpGet(port, "/metrics");
  EXPECT_NE(body.find("# TYPE reid_test_value gauge\nreid_test_value 42\n"), std::string::npos)
      << body;
}

TEST(ExporterTest, TakenPortNamesThePortAndTheWayOut) {
  testing::SilentListener taken;
  auto exposer = StartExporter("127.0.0.1", taken.port(), OneGauge());
  ASSERT_FALSE(exposer.ok());
  const std::string& m = exposer.status().message();
  EXPECT_NE(m.find("127.0.0.1:" + std::to_string(taken.port())), std::string::npos) << m;
  EXPECT_NE(m.find("monitoring.metrics_port_base"), std::string::npos) << m;
  EXPECT_NE(m.find("metrics_port_base: 0"), std::string::npos) << m;
}

TEST(ExporterTest, ListenAddressBracketsIpv6) {
  EXPECT_EQ(ListenAddress("127.0.0.1", 9400), "127.0.0.1:9400");
  EXPECT_EQ(ListenAddress("::1", 9401), "[::1]:9401");
  EXPECT_EQ(ListenAddress("[::]", 9402), "[::]:9402");
}

}  // namespace
}  // namespace reid::monitoring
