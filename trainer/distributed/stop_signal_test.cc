// The stop flag in one process: SIGUSR1 sets it and the world-size-1 all-reduce reports it
// (tests/dist_stop_signal_test.cc checks it across ranks); training's SIGINT and SIGHUP handlers
// (each case in a child process: the flag cannot be cleared); the handlers' own thread. Signals
// are sent to the process (kill), as a user or a scheduler sends them: the installing thread
// blocks them, so the signal thread takes them and the test waits for its handler.
#include "trainer/distributed/stop_signal.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <thread>

#include "trainer/distributed/comm.h"

namespace reid::dist {
namespace {

// Sends sig to this process and waits up to 5 s for the stop flag (a handler on the signal
// thread sets it).
bool SendAndWait(int sig) {
  kill(getpid(), sig);
  for (int i = 0; i < 500 && !LocalStopRequested(); ++i) usleep(10000);
  return LocalStopRequested();
}

bool Blocked(int sig) {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, sig) == 1;
}

TEST(StopSignalTest, SignalSetsFlagAndAllReduceSeesIt) {
  InstallStopSignalHandlers();
  auto comm = MakeLocalComm();
  EXPECT_FALSE(StopRequestedOnAnyRank(*comm));
  EXPECT_TRUE(SendAndWait(SIGUSR1));
  EXPECT_TRUE(StopRequestedOnAnyRank(*comm));
}

// The handlers run on a thread of their own: the installing thread and the threads it starts
// afterwards block the handled signals; BlockStopSignalsInThisThread blocks them elsewhere.
TEST(StopSignalTest, HandledSignalsAreBlockedOutsideTheSignalThread) {
  InstallStopSignalHandlers();
  EXPECT_TRUE(Blocked(SIGTERM) && Blocked(SIGUSR1) && Blocked(SIGINT) && Blocked(SIGHUP));
  EXPECT_FALSE(Blocked(SIGSEGV)) << "faults are raised in their own thread and never blocked";
  bool started_after = false;
  std::thread([&] { started_after = Blocked(SIGTERM); }).join();
  EXPECT_TRUE(started_after);
  sigset_t none;
  sigemptyset(&none);
  bool other = true, blocked_there = false;
  std::thread([&] {
    pthread_sigmask(SIG_SETMASK, &none, nullptr);  // as a thread started before the install
    other = Blocked(SIGTERM);
    BlockStopSignalsInThisThread();
    blocked_there = Blocked(SIGTERM);
  }).join();
  EXPECT_FALSE(other);
  EXPECT_TRUE(blocked_there);
}

TEST(StopSignalDeathTest, FirstInterruptRequestsAStop) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        if (LocalStopRequested()) std::_Exit(3);
        std::_Exit(SendAndWait(SIGINT) ? 0 : 4);
      },
      testing::ExitedWithCode(0), "SIGINT: stopping after the current step with a checkpoint");
}

TEST(StopSignalDeathTest, SecondInterruptWithinTheWindowExits130) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        if (!SendAndWait(SIGINT)) std::_Exit(4);
        kill(getpid(), SIGINT);
        sleep(5);
        std::_Exit(0);  // not reached
      },
      testing::ExitedWithCode(130), "second SIGINT: exiting now without a checkpoint");
}

TEST(StopSignalDeathTest, InterruptAfterTheWindowOnlyRepeatsTheRequest) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        if (!SendAndWait(SIGINT)) std::_Exit(4);
        sleep(kInterruptWindowSeconds + 1);
        kill(getpid(), SIGINT);
        sleep(1);  // the process must still be here
        std::_Exit(LocalStopRequested() ? 0 : 4);
      },
      testing::ExitedWithCode(0), "");
}

TEST(StopSignalDeathTest, HangupRequestsAStopAndIgnoresSigpipe) {
  EXPECT_EXIT(
      {
        InstallInterruptHandlers();
        if (!SendAndWait(SIGHUP)) std::_Exit(4);
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
