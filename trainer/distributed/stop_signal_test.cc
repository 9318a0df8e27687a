// The stop flag in one process: SIGUSR1 sets it and the world-size-1 all-reduce reports it
// (tests/dist_stop_signal_test.cc checks it across ranks); training's SIGINT and SIGHUP handlers
// (each case in a child process: the flag cannot be cleared).
#include "trainer/distributed/stop_signal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>

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

TEST(StopSignalDeathTest, FirstInterruptRequestsAStop) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        if (LocalStopRequested()) std::_Exit(3);
        raise(SIGINT);
        std::_Exit(LocalStopRequested() ? 0 : 4);
      },
      testing::ExitedWithCode(0), "SIGINT: stopping after the current step with a checkpoint");
}

TEST(StopSignalDeathTest, SecondInterruptWithinTheWindowExits130) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        raise(SIGINT);
        raise(SIGINT);
        std::_Exit(0);  // not reached
      },
      testing::ExitedWithCode(130), "second SIGINT: exiting now without a checkpoint");
}

TEST(StopSignalDeathTest, InterruptAfterTheWindowOnlyRepeatsTheRequest) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        raise(SIGINT);
        sleep(kInterruptWindowSeconds + 1);
        raise(SIGINT);
        std::_Exit(LocalStopRequested() ? 0 : 4);
      },
      testing::ExitedWithCode(0), "");
}

TEST(StopSignalDeathTest, HangupRequestsAStopAndIgnoresSigpipe) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        raise(SIGHUP);
        struct sigaction pipe_action = {};
        sigaction(SIGPIPE, nullptr, &pipe_action);
        if (pipe_action.sa_handler != SIG_IGN) std::_Exit(5);
        raise(SIGPIPE);  // ignored now
        std::_Exit(LocalStopRequested() ? 0 : 4);
      },
      testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace reid::dist
