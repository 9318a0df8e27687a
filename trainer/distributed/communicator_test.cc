// The tensor communicator in one process: a world of one needs no MPI
// (tests/dist_collectives_test.cc runs the collectives across ranks).
#include "trainer/distributed/communicator.h"

#include <gtest/gtest.h>

#include "base/status_test_util.h"
#include "trainer/distributed/ranks.h"

namespace reid::dist {
namespace {

TEST(CommunicatorTest, CheckBackendRefusesNcclWhereItCannotRun) {
  reid::proto::DistConfig config;
  for (auto backend : {reid::proto::DistConfig::AUTO, reid::proto::DistConfig::MPI}) {
    config.set_backend(backend);
    EXPECT_OK(CheckBackend(config, -1));
    EXPECT_OK(CheckBackend(config, 0));
  }
  config.set_backend(reid::proto::DistConfig::NCCL);
  const Status cpu = CheckBackend(config, -1);  // never on the CPU, whatever the build
  EXPECT_EQ(cpu.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(cpu.message().find("dist.backend = NCCL"), std::string::npos) << cpu.message();
  const Status gpu = CheckBackend(config, 0);
#ifdef REID_HAVE_NCCL
  EXPECT_OK(gpu);
#else
  EXPECT_EQ(gpu.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(gpu.message().find("this build has no NCCL"), std::string::npos) << gpu.message();
#endif
}

TEST(CommunicatorTest, WorldOfOneNeedsNoMpi) {
  auto comm = MakeCommunicator(Ranks(), reid::proto::DistConfig());
  EXPECT_EQ(comm->size(), 1);
  EXPECT_STREQ(comm->host().backend(), "local");
  torch::Tensor t = torch::arange(4).view({2, 2});
  EXPECT_TRUE(comm->AllGatherV(t).equal(t));
}

}  // namespace
}  // namespace reid::dist
