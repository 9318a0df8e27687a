// The stop flag under mpirun (2 and 3 ranks): SIGUSR1 on one rank is seen by all of them at the
// next StopRequestedOnAnyRank.
#include <gtest/gtest.h>

#include <csignal>

#include "trainer/distributed/communicator.h"
#include "trainer/distributed/mpi_comm.h"
#include "trainer/distributed/stop_signal.h"

namespace reid::dist {
namespace {

// The flag stays set for the rest of the process: one test per binary.
TEST(StopSignalMpiTest, StopFlagOfOneRankStopsAll) {
  Communicator comm(MakeMpiComm(MPI_COMM_WORLD, {}));
  EXPECT_FALSE(StopRequestedOnAnyRank(comm.host()));
  InstallStopSignalHandlers();
  if (comm.rank() == comm.size() - 1) raise(SIGUSR1);
  EXPECT_TRUE(StopRequestedOnAnyRank(comm.host()));
}

}  // namespace
}  // namespace reid::dist
