// The stop flag in one process: SIGUSR1 sets it and the world-size-1 all-reduce reports it
// (tests/dist_stop_signal_test.cc checks it across ranks).
#include "trainer/distributed/stop_signal.h"

#include <gtest/gtest.h>

#include <csignal>

#include "trainer/distributed/comm.h"

namespace reid::dist {
namespace {

TEST(StopSignalTest, SignalSetsFlagAndAllReduceSeesIt) {
  InstallStopSignalHandlers();
  auto comm = MakeLocalComm();
  EXPECT_FALSE(StopRequestedOnAnyRank(*comm));
  raise(SIGUSR1);
  EXPECT_TRUE(LocalStopRequested());
  EXPECT_TRUE(StopRequestedOnAnyRank(*comm));
}

}  // namespace
}  // namespace reid::dist
