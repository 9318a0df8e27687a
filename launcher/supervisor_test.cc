// Unit tests of reid-launch's supervisor with /bin/sh jobs: restarts, exit statuses, and stop
// signals forwarded (SIGTERM as SIGUSR1) without a restart afterwards.
#include "launcher/supervisor.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <sstream>
#include <thread>
#include <vector>

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
  o.min_backoff_s = 0.01;
  EXPECT_EQ(Supervise(Shell({"exit 3"}, &attempts), o, log), 3);
  EXPECT_EQ(attempts, 3);
  EXPECT_NE(log.str().find("restart 2/2"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("no restarts left (--max_restarts=2)"), std::string::npos);
  attempts = 0;
  o.max_restarts = 0;
  EXPECT_EQ(Supervise(Shell({"kill -9 $$"}, &attempts), o, log), 128 + SIGKILL);
  EXPECT_EQ(attempts, 1);
}

// A user error (exit 2: bad flag, config, path) fails the same way every time: the launcher
// returns 2 at once instead of restarting (5,641 restarts in 15 s before, with
// --max_restarts=1000000 --restart_delay_s=0).
TEST(SupervisorTest, UserErrorIsNeverRestarted) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 1000000;
  EXPECT_EQ(Supervise(Shell({"exit 2"}, &attempts), o, log), 2);
  EXPECT_EQ(attempts, 1);
  EXPECT_NE(log.str().find("job exited with status 2 (a user error"), std::string::npos)
      << log.str();
  EXPECT_NE(log.str().find("not restarting"), std::string::npos);
}

TEST(SupervisorTest, RestartDelayDoublesUpToTheCap) {
  SuperviseOptions o;  // min_backoff_s 1, backoff_cap_s 300
  o.restart_delay_s = 5;
  std::vector<double> got;
  for (int n = 1; n <= 9; ++n) got.push_back(RestartDelay(o, n));
  EXPECT_EQ(got, (std::vector<double>{5, 10, 20, 40, 80, 160, 300, 300, 300}));
  o.restart_delay_s = 0;  // no delay before the first restart only
  got.clear();
  for (int n = 1; n <= 5; ++n) got.push_back(RestartDelay(o, n));
  EXPECT_EQ(got, (std::vector<double>{0, 2, 4, 8, 16}));
  EXPECT_EQ(RestartDelay(o, 1000000), 300);  // no overflow
  o.restart_delay_s = 900;                    // above the cap: the cap rises to it
  EXPECT_EQ(RestartDelay(o, 1), 900);
  EXPECT_EQ(RestartDelay(o, 5), 900);
}

// A job failing at once with --restart_delay_s=0 restarts 0, 0.2, 0.4, 0.8 s later (min_backoff_s
// 0.1 here, for speed): 4 restarts take 1.4 s, not a busy loop; a run that lasted healthy_run_s
// starts the back-off again.
TEST(SupervisorTest, QuickFailuresBackOff) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 4;
  o.min_backoff_s = 0.1;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(Supervise(Shell({"exit 3"}, &attempts), o, log), 3);
  const double took =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(attempts, 5);
  EXPECT_GE(took, 1.4);
  EXPECT_LT(took, 10);
  EXPECT_NE(log.str().find("restart 4/4 in 0.8 s with --resume=auto (failure 4 in a row: back-off)"),
            std::string::npos)
      << log.str();
  attempts = 0;
  log.str("");
  o.max_restarts = 2;
  o.healthy_run_s = 0;  // every run counts as healthy: the delay never grows
  EXPECT_EQ(Supervise(Shell({"exit 3"}, &attempts), o, log), 3);
  EXPECT_EQ(log.str().find("back-off"), std::string::npos) << log.str();
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

// Exits 75 on SIGUSR1 (like a trainer that checkpointed), 9 on SIGTERM, 7 after ~10 s.
const char kTrainerLike[] =
    "trap 'exit 75' USR1; trap 'exit 9' TERM; i=0; "
    "while [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; exit 7";

TEST(SupervisorTest, SigtermReachesTheJobAsSigusr1AndIsNotRestarted) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 2;
  std::thread sender = SignalLater(SIGTERM);
  EXPECT_EQ(Supervise(Shell({kTrainerLike}, &attempts), o, log), 75);
  sender.join();
  EXPECT_EQ(attempts, 1);
  EXPECT_NE(log.str().find("preempted: checkpoint written); not restarting"), std::string::npos)
      << log.str();
}

TEST(SupervisorTest, AJobStoppedAfterACheckpointIsNotRestarted) {
  int attempts = 0;
  std::ostringstream log;
  SuperviseOptions o;
  o.max_restarts = 2;
  o.restart_delay_s = 0;
  EXPECT_EQ(Supervise(Shell({"exit 75"}, &attempts), o, log), 75);  // signalled by someone else
  EXPECT_EQ(attempts, 1);
  EXPECT_NE(log.str().find("exited with status 75 (stopped by a signal after writing a "
                           "checkpoint) on attempt 1; not restarting"),
            std::string::npos)
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
