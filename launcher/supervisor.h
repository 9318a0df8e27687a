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
  std::vector<std::pair<std::string, std::string>> env;  // set in the child before exec
};

// The argv of attempt `attempt` (0-based); AttemptArgv in plan.h for the real launcher.
using AttemptCommand = std::function<std::vector<std::string>(int attempt)>;

// Runs attempt 0, then, while it fails and restarts are left, waits restart_delay_s and runs the
// next attempt, logging each restart (attempt, exit status, delay) to `log`. Stop signals:
// SIGUSR1 and the first SIGTERM reach the job as SIGUSR1 (mpirun forwards USR1 to every rank, and
// the trainers checkpoint on it; mpirun and srun would answer TERM by killing the ranks); SIGINT
// and a second SIGTERM are forwarded as they are (stop now). A job that exits 0 after a
// forwarded signal was preempted: it is not restarted, nor is a failed job after one. Returns the
// last attempt's exit status (128 + signal when it died by a signal).
int Supervise(const AttemptCommand& command, const SuperviseOptions& options, std::ostream& log);

// Exit status of a waitpid status word: the code, or 128 + the signal that ended the process.
int ExitStatusOf(int wait_status);

}  // namespace reid::launcher
