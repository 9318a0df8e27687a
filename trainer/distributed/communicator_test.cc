// The tensor communicator in one process: a world of one needs no MPI
// (tests/dist_collectives_test.cc runs the collectives across ranks).
#include "trainer/distributed/communicator.h"

#include <gtest/gtest.h>

#include "trainer/distributed/ranks.h"

namespace reid::dist {
namespace {

TEST(CommunicatorTest, WorldOfOneNeedsNoMpi) {
  auto comm = MakeCommunicator(Ranks(), reid::proto::DistConfig());
  EXPECT_EQ(comm->size(), 1);
  EXPECT_STREQ(comm->host().backend(), "local");
  torch::Tensor t = torch::arange(4).view({2, 2});
  EXPECT_TRUE(comm->AllGatherV(t).equal(t));
}

}  // namespace
}  // namespace reid::dist
