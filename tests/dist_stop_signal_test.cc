// The stop flag under mpirun (2 and 3 ranks): SIGUSR1 on one rank is seen by all of them at the
// next StopRequestedOnAnyRank.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

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
  if (comm.rank() == comm.size() - 1) {
    kill(getpid(), SIGUSR1);  // taken by the signal thread: wait until its handler ran
    for (int i = 0; i < 500 && !LocalStopRequested(); ++i) usleep(10000);
  }
  EXPECT_TRUE(StopRequestedOnAnyRank(comm.host()));
}

}  // namespace
}  // namespace reid::dist
