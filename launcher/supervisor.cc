// Child process, signal forwarding and restarts of reid-launch (see supervisor.h).
#include "launcher/supervisor.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "launcher/plan.h"

namespace reid::launcher {
namespace {

// Shared with the signal handler (only sig_atomic_t and async-signal-safe calls there).
volatile std::sig_atomic_t g_child = 0;        // pid of the running job, 0 between attempts
volatile std::sig_atomic_t g_stop_signal = 0;  // the first stop signal received (0 = none)
volatile std::sig_atomic_t g_term_count = 0;

void OnSignal(int sig) {
  if (g_stop_signal == 0) g_stop_signal = sig;
  int forward = sig;
  if (sig == SIGTERM) forward = ++g_term_count == 1 ? SIGUSR1 : SIGTERM;
  if (g_child > 0) kill(static_cast<pid_t>(g_child), forward);
}

const int kForwarded[] = {SIGINT, SIGTERM, SIGUSR1};

void InstallHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int sig : kForwarded) sigaction(sig, &action, nullptr);
}

// Starts argv with the extra environment; the child's stop signals are back to default and it
// gets SIGTERM if reid-launch dies (so an orphaned mpirun tears its ranks down).
pid_t Start(const std::vector<std::string>& argv, const SuperviseOptions& options) {
  sigset_t block, old;
  sigemptyset(&block);
  for (int sig : kForwarded) sigaddset(&block, sig);
  sigprocmask(SIG_BLOCK, &block, &old);  // no handler runs between fork and g_child = pid
  const pid_t pid = fork();
  if (pid == 0) {
    for (int sig : kForwarded) signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &old, nullptr);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    for (const auto& [name, value] : options.env) setenv(name.c_str(), value.c_str(), 1);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    std::fprintf(stderr, "reid-launch: cannot run %s: %s\n", args[0], std::strerror(errno));
    _exit(127);
  }
  if (pid > 0) g_child = pid;
  sigprocmask(SIG_SETMASK, &old, nullptr);
  return pid;
}

int WaitFor(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return 127;
  }
  g_child = 0;
  return ExitStatusOf(status);
}

// Sleeps `seconds` unless a stop signal arrives; false when one did.
bool SleepUnlessStopped(double seconds) {
  timespec left = {static_cast<time_t>(seconds),
                   static_cast<long>((seconds - static_cast<time_t>(seconds)) * 1e9)};
  while (g_stop_signal == 0 && nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
  return g_stop_signal == 0;
}

double MonotonicSeconds() {
  timespec now = {};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

// Logs how attempt `attempt` ended; true when the job is to be restarted. `failures_in_a_row`
// counts this failure (see RestartDelay).
bool ShouldRestart(int status, int attempt, int failures_in_a_row,
                   const SuperviseOptions& options, std::ostream& log) {
  if (g_stop_signal != 0) {
    log << "reid-launch: job ended with exit status " << status << " after "
        << strsignal(g_stop_signal) << " was forwarded"
        << (status == 0 || status == kStoppedStatus
                ? " (preempted: checkpoint written); not restarting"
                : "; not restarting")
        << std::endl;
    return false;
  }
  if (status == 0) return false;
  if (status == kStoppedStatus) {
    log << "reid-launch: job exited with status 75 (stopped by a signal after writing a "
        << "checkpoint) on attempt " << attempt + 1 << "; not restarting" << std::endl;
    return false;
  }
  if (status == kUserErrorStatus) {
    log << "reid-launch: job exited with status 2 (a user error: bad flag, config, path or "
        << "data; see its message above) on attempt " << attempt + 1
        << "; a restart would fail the same way: not restarting" << std::endl;
    return false;
  }
  if (attempt >= options.max_restarts) {
    log << "reid-launch: job failed with exit status " << status << " on attempt " << attempt + 1
        << "; no restarts left (--max_restarts=" << options.max_restarts << ")" << std::endl;
    return false;
  }
  const double delay = RestartDelay(options, failures_in_a_row);
  log << "reid-launch: job failed with exit status " << status << " on attempt " << attempt + 1
      << "; restart " << attempt + 1 << "/" << options.max_restarts << " in " << delay
      << " s with --resume=auto"
      << (failures_in_a_row > 1 ? " (failure " + std::to_string(failures_in_a_row) +
                                      " in a row: back-off)"
                                : std::string())
      << std::endl;
  if (!SleepUnlessStopped(delay)) {
    log << "reid-launch: " << strsignal(g_stop_signal) << " during the restart delay; "
        << "not restarting" << std::endl;
    return false;
  }
  return true;
}

}  // namespace

double RestartDelay(const SuperviseOptions& options, int failures_in_a_row) {
  if (failures_in_a_row <= 1) return options.restart_delay_s;
  const double cap = std::max(options.backoff_cap_s, options.restart_delay_s);
  double delay = std::max(options.restart_delay_s, options.min_backoff_s);
  for (int i = 1; i < failures_in_a_row && delay < cap; ++i) delay *= 2;
  return std::min(delay, cap);
}

int ExitStatusOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 1;
}

int Supervise(const AttemptCommand& command, const SuperviseOptions& options, std::ostream& log) {
  g_stop_signal = 0;
  g_term_count = 0;
  InstallHandlers();
  int failures_in_a_row = 0;
  for (int attempt = 0;; ++attempt) {
    const std::vector<std::string> argv = command(attempt);
    log << "reid-launch: attempt " << attempt + 1 << "/" << options.max_restarts + 1 << ": "
        << ShellJoin(argv) << std::endl;
    const double started = MonotonicSeconds();
    const pid_t pid = Start(argv, options);
    if (pid < 0) {
      log << "reid-launch: fork failed: " << std::strerror(errno) << std::endl;
      return 1;
    }
    const int status = WaitFor(pid);
    // A run long enough to have been healthy starts the back-off again.
    failures_in_a_row =
        MonotonicSeconds() - started >= options.healthy_run_s ? 1 : failures_in_a_row + 1;
    if (!ShouldRestart(status, attempt, failures_in_a_row, options, log)) return status;
  }
}

}  // namespace reid::launcher
