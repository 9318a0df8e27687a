// Runs the job (mpirun or srun) as a child process, forwards stop signals to it and restarts it
// after a failure; the restart policy lives here, the command lines in plan.h.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace reid::launcher {

struct SuperviseOptions {
  int max_restarts = 0;
  double restart_delay_s = 0;
  // Back-off (RestartDelay): the delay doubles with each failure in a row, from
  // max(restart_delay_s, min_backoff_s), up to max(backoff_cap_s, restart_delay_s); an attempt
  // that ran at least healthy_run_s before it failed starts the count again.
  double min_backoff_s = 1;
  double backoff_cap_s = 300;
  double healthy_run_s = 600;
  std::vector<std::pair<std::string, std::string>> env;  // set in the child before exec
};

// The job's status for a user error (a bad flag, config, path or dataset): `reid` reports those
// before any collective starts, and a restart would only repeat them, so it is never restarted.
inline constexpr int kUserErrorStatus = 2;
// `reid train`'s status after a stop signal made it write a checkpoint (trainer/commands.h).
inline constexpr int kStoppedStatus = 75;

// The wait before the restart that follows the `failures_in_a_row`-th failure in a row (>= 1):
// restart_delay_s after the first; then max(restart_delay_s, min_backoff_s) x 2^(n-1), at most
// max(backoff_cap_s, restart_delay_s). With the defaults and --restart_delay_s=5: 5, 10, 20, 40,
// 80, 160, 300, 300, ... s; with --restart_delay_s=0: 0, 2, 4, 8, ... s.
double RestartDelay(const SuperviseOptions& options, int failures_in_a_row);

// The argv of attempt `attempt` (0-based); AttemptArgv in plan.h for the real launcher.
using AttemptCommand = std::function<std::vector<std::string>(int attempt)>;

// Runs attempt 0, then, while it fails and restarts are left, waits RestartDelay and runs the
// next attempt, logging each restart (attempt, exit status, delay) to `log`. A job that exits
// with kUserErrorStatus is not restarted: the launcher returns 2 at once; nor is one that exits
// kStoppedStatus (its ranks were stopped by a signal after a checkpoint). Stop signals:
// SIGUSR1 and the first SIGTERM reach the job as SIGUSR1 (mpirun forwards USR1 to every rank, and
// the trainers checkpoint on it; mpirun and srun would answer TERM by killing the ranks); SIGINT
// and a second SIGTERM are forwarded as they are (stop now). A job that exits 0 or 75 after a
// forwarded signal was preempted: it is not restarted, nor is a failed job after one. Returns the
// last attempt's exit status (128 + signal when it died by a signal).
int Supervise(const AttemptCommand& command, const SuperviseOptions& options, std::ostream& log);

// Exit status of a waitpid status word: the code, or 128 + the signal that ended the process.
int ExitStatusOf(int wait_status);

}  // namespace reid::launcher
