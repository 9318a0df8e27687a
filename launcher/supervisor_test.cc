// Unit tests of reid-launch's supervisor with /bin/sh jobs: restarts, exit statuses, and stop
// signals forwarded (SIGTERM as SIGUSR1) without a restart afterwards.
#include "launcher/supervisor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <sstream>
#include <thread>

namespace reid::launcher {
namespace {

// A job that runs `script` with /bin/sh; `attempts` counts the calls.
AttemptCommand Shell(const std::vector<std::string>& scripts, int* attempts) {
  return [scripts, attempts](int attempt) {
    ++*attempts;
    const std::string& s = scripts[std::min<size_t>(attempt, scripts.size() - 1)];
    return std::vector<std::string>{"/bin/sh", "-c", s};
  };
}

TEST(SupervisorTest, SuccessRunsOnce) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 3;
  EXPECT_EQ(Supervise(Shell({"exit 0"}, &attempts), o, log), 0);
  EXPECT_EQ(attempts, 1);
}

TEST(SupervisorTest, RestartsUntilSuccess) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 3;
  o.restart_delay_s = 0.01;
  EXPECT_EQ(Supervise(Shell({"exit 5", "exit 0"}, &attempts), o, log), 0);
  EXPECT_EQ(attempts, 2);
  EXPECT_NE(log.str().find("job failed with exit status 5 on attempt 1; restart 1/3 in 0.01 s"),
            std::string::npos)
      << log.str();
}

TEST(SupervisorTest, GivesUpAfterMaxRestartsWithTheJobsStatus) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 2;
  EXPECT_EQ(Supervise(Shell({"exit 3"}, &attempts), o, log), 3);
  EXPECT_EQ(attempts, 3);
  EXPECT_NE(log.str().find("restart 2/2"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("no restarts left (--max_restarts=2)"), std::string::npos);
  attempts = 0;
  o.max_restarts = 0;
  EXPECT_EQ(Supervise(Shell({"kill -9 $$"}, &attempts), o, log), 128 + SIGKILL);
  EXPECT_EQ(attempts, 1);
}

TEST(SupervisorTest, SetsTheJobEnvironment) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.env = {{"NCCL_DEBUG", "WARN"}};
  EXPECT_EQ(Supervise(Shell({"test \"$NCCL_DEBUG\" = WARN"}, &attempts), o, log), 0);
}

// Sends `sig` to this process once the job has had time to start.
std::thread SignalLater(int sig) {
  return std::thread([sig] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    kill(getpid(), sig);
  });
}

// Exits 0 on SIGUSR1 (like a trainer that checkpointed), 9 on SIGTERM, 7 after ~10 s.
const char kTrainerLike[] =
    "trap 'exit 0' USR1; trap 'exit 9' TERM; i=0; "
    "while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 7";

TEST(SupervisorTest, SigtermReachesTheJobAsSigusr1AndIsNotRestarted) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 2;
  std::thread sender = SignalLater(SIGTERM);
  EXPECT_EQ(Supervise(Shell({kTrainerLike}, &attempts), o, log), 0);
  sender.join();
  EXPECT_EQ(attempts, 1);
  EXPECT_NE(log.str().find("preempted: checkpoint written); not restarting"), std::string::npos)
      << log.str();
}

TEST(SupervisorTest, FailureAfterAForwardedSignalIsNotRestarted) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 2;
  std::thread sender = SignalLater(SIGUSR1);
  EXPECT_EQ(Supervise(Shell({"trap 'exit 6' USR1; sleep 10 & wait"}, &attempts), o, log), 6);
  sender.join();
  EXPECT_EQ(attempts, 1);
}

}  // namespace
}  // namespace reid::launcher
