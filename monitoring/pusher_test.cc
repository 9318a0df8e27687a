// Pushes reach a Pushgateway under job + run; a refusing, failing or silent gateway is an error
// within the timeout, never a stall.
#include "monitoring/pusher.h"

#include <gtest/gtest.h>
#include <prometheus/gauge.h>

#include "base/status_test_util.h"
#include "monitoring/test_http.h"

namespace reid::monitoring {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

std::shared_ptr<prometheus::Registry> OneGauge() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge().Name("reid_test_value").Help("t").Register(*registry).Add({}).Set(7);
  return registry;
}

std::string Url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

TEST(PusherTest, ParsesUrls) {
  auto a = ParsePushgatewayUrl("http://127.0.0.1:9091");
  ASSERT_OK(a);
  EXPECT_EQ(a->host, "http://127.0.0.1");
  EXPECT_EQ(a->port, "9091");
  a = ParsePushgatewayUrl("https://gw.example.org/prefix/");
  ASSERT_OK(a);
  EXPECT_EQ(a->host, "https://gw.example.org");
  EXPECT_EQ(a->port, "443/prefix");
  a = ParsePushgatewayUrl("http://[::1]:9091");
  ASSERT_OK(a);
  EXPECT_EQ(a->host, "http://[::1]");
  EXPECT_EQ(a->port, "9091");
  for (const char* bad : {"127.0.0.1:9091", "http://", "http://h:99999", "http://h:x",
                          "http://u:p@h:1", "http://h:1/?q"}) {
    EXPECT_FALSE(ParsePushgatewayUrl(bad).ok()) << bad;
  }
  EXPECT_EQ(GroupingKeyValue("runs/a b"), "runs_a_b");
  EXPECT_EQ(GroupingKeyValue(""), "_");
}

TEST(PusherTest, PushesUnderJobAndRun) {
  testing::FakePushgateway gateway;
  auto registry = OneGauge();
  auto pusher = Pusher::Start(Url(gateway.port()), "reid_train", "run 1", registry);
  ASSERT_OK(pusher);
  Status s = (*pusher)->PushAndWait(milliseconds(5000));
  EXPECT_OK(s);
  const auto requests = gateway.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].rfind("POST /metrics/job/reid_train/run/run_1 HTTP/1.1\n\n", 0), 0u)
      << requests[0];
  EXPECT_NE(requests[0].find("reid_test_value 7\n"), std::string::npos) << requests[0];
}

TEST(PusherTest, GatewayErrorIsReported) {
  testing::FakePushgateway gateway(500);
  auto registry = OneGauge();  // the Pusher holds it weakly, as the exporter does
  auto pusher = Pusher::Start(Url(gateway.port()), "j", "r", registry);
  ASSERT_OK(pusher);
  Status s = (*pusher)->PushAndWait(milliseconds(5000));
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("HTTP 500"), std::string::npos) << s.message();
}

TEST(PusherTest, ClosedPortFailsFast) {
  const int port = testing::FreePort();  // nothing listens there
  auto registry = OneGauge();
  auto pusher = Pusher::Start(Url(port), "j", "r", registry);
  ASSERT_OK(pusher);
  const auto start = Clock::now();
  Status s = (*pusher)->PushAndWait(milliseconds(5000));
  EXPECT_LT(SecondsSince(start), 2.0);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot connect"), std::string::npos) << s.message();
}

// A port that accepts connections (in the kernel) and never answers: the Gateway itself would
// wait forever; the caller waits its timeout, and neither it nor the destructor blocks longer.
TEST(PusherTest, BlackholedPortTimesOut) {
  testing::SilentListener blackhole;
  auto registry = OneGauge();
  const auto start = Clock::now();
  {
    auto pusher = Pusher::Start(Url(blackhole.port()), "j", "r", registry);
    ASSERT_OK(pusher);
    Status s = (*pusher)->PushAndWait(milliseconds(500));
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("did not answer within 0.5 s"), std::string::npos) << s.message();
  }
  EXPECT_LT(SecondsSince(start), 2.0);
}

TEST(PusherTest, SlowGatewayWithinTheTimeoutSucceeds) {
  testing::FakePushgateway gateway(202, milliseconds(300));
  auto registry = OneGauge();
  auto pusher = Pusher::Start(Url(gateway.port()), "j", "r", registry);
  ASSERT_OK(pusher);
  EXPECT_OK((*pusher)->PushAndWait(milliseconds(5000)));
}

}  // namespace
}  // namespace reid::monitoring
