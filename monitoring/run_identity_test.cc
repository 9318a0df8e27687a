// The run label (name, else the SLURM job, else the output directory; always a safe label value)
// and the exporters' port range, refused before any port is bound when it cannot work.
#include "monitoring/run_identity.h"

#include <gtest/gtest.h>

#include <map>

namespace reid::monitoring {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(RunIdentityTest, SanitisesToASafeBoundedLabelValue) {
  EXPECT_EQ(SanitizeLabelValue("market1501_improved-v2.1"), "market1501_improved-v2.1");
  EXPECT_EQ(SanitizeLabelValue("a b/\"c\"{d}=\\e"), "a_b__c__d___e");
  EXPECT_EQ(SanitizeLabelValue("caf\xc3\xa9"), "caf__");  // non-ASCII bytes
  EXPECT_EQ(SanitizeLabelValue(""), "_");
  EXPECT_EQ(SanitizeLabelValue(std::string(500, 'x')).size(), kMaxRunLabelBytes);
}

TEST(RunIdentityTest, NameFirstThenSlurmJobThenOutputDirectory) {
  const auto slurm = FakeEnv({{"SLURM_JOB_ID", "4242"}});
  EXPECT_EQ(ChooseRunLabel("t4 plain", "runs/x", slurm).value, "t4_plain");
  EXPECT_NE(ChooseRunLabel("t4 plain", "runs/x", slurm).source.find("t4 plain"), std::string::npos);
  EXPECT_EQ(ChooseRunLabel("", "runs/x", slurm).value, "4242");
  const auto array = FakeEnv(
      {{"SLURM_JOB_ID", "4243"}, {"SLURM_ARRAY_JOB_ID", "4200"}, {"SLURM_ARRAY_TASK_ID", "3"}});
  EXPECT_EQ(ChooseRunLabel("", "runs/x", array).value, "4200_3");
  const auto none = FakeEnv({});
  EXPECT_EQ(ChooseRunLabel("", "/data/runs/market 1501/", none).value, "market_1501");
  EXPECT_EQ(ChooseRunLabel("", "run", none).value, "run");
}

proto::MonitoringConfig Ports(int base, const std::string& gateway = "") {
  proto::MonitoringConfig c;
  c.set_metrics_port_base(base);
  c.set_pushgateway_url(gateway);
  return c;
}

TEST(RunIdentityTest, PortRangeOfTheNodeIsCheckedBeforeBinding) {
  EXPECT_TRUE(CheckExporterPorts(Ports(0), 8).ok());  // off
  EXPECT_TRUE(CheckExporterPorts(Ports(19400), 8).ok());
  EXPECT_TRUE(CheckExporterPorts(Ports(65528), 8).ok());  // 65528-65535
  Status s = CheckExporterPorts(Ports(65530), 8);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("65530-65537, past port 65535"), std::string::npos) << s.message();
  s = CheckExporterPorts(Ports(9400), 1);  // the old default: dcgm-exporter's port
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("9400 of NVIDIA dcgm-exporter"), std::string::npos) << s.message();
  s = CheckExporterPorts(Ports(9095, ""), 8);  // 9095-9102 covers node_exporter's 9100
  EXPECT_NE(s.message().find("port 9100 of node_exporter"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckExporterPorts(Ports(9095), 5).ok());  // 9095-9099
  s = CheckExporterPorts(Ports(20000, "http://127.0.0.1:20003"), 8);
  EXPECT_NE(s.message().find("port 20003 of monitoring.pushgateway_url"), std::string::npos)
      << s.message();
  EXPECT_TRUE(CheckExporterPorts(Ports(20000, "http://127.0.0.1:20003"), 3).ok());
  EXPECT_TRUE(CheckExporterPorts(Ports(20000, "http://gw.example.org:20003"), 8).ok());
}

}  // namespace
}  // namespace reid::monitoring
