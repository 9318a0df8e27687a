// Stop flag set by SIGTERM / SIGUSR1 (and, in training, SIGINT / SIGHUP) and agreed on by all
// ranks (see stop_signal.h).
#include "trainer/distributed/stop_signal.h"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>

namespace reid::dist {
namespace {

volatile std::sig_atomic_t g_stop = 0;
// CLOCK_MONOTONIC second of the last SIGINT; 0 = none yet. Only the handler touches it, and
// SIGINT is blocked while the handler runs (sa_mask), so there is no concurrent writer.
volatile std::sig_atomic_t g_last_interrupt_s = 0;

void OnStopSignal(int) { g_stop = 1; }

// write(2) of a C string: async-signal-safe, the result ignored (stderr may be gone).
void Say(const char* text) {
  const ssize_t ignored = write(STDERR_FILENO, text, std::strlen(text));
  (void)ignored;
}

void OnInterrupt(int) {
  struct timespec now = {};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  // +1: a monotonic clock may start at 0, and 0 means "no SIGINT yet".
  const long second = static_cast<long>(now.tv_sec) + 1;
  const long last = g_last_interrupt_s;
  if (last != 0 && second - last <= kInterruptWindowSeconds) {
    Say("\nreid: second SIGINT: exiting now without a checkpoint (status 130)\n");
    _exit(128 + SIGINT);
  }
  g_last_interrupt_s = static_cast<std::sig_atomic_t>(second);
  g_stop = 1;
  Say("\nreid: SIGINT: stopping after the current step with a checkpoint; press Ctrl-C again "
      "within 5 s to exit at once\n");
}

void OnHangup(int) {
  // sigaction is async-signal-safe: from now on a write to a pipe whose reader went with the
  // terminal fails with EPIPE instead of killing the process.
  struct sigaction ignore = {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
  g_stop = 1;
}

// The signals these handlers take.
sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGUSR1, SIGINT, SIGHUP}) sigaddset(&set, sig);
  return set;
}

// Routes the handled signals to a thread of their own: the calling thread blocks them, and so
// does every thread it starts from now on (a new thread inherits its creator's mask); the signal
// thread unblocks them and only waits. A handler never runs on a thread that computes, whose
// stack pointer oneDNN's JIT kernels (LibTorch's CPU convolution, its sgemm) point into the heap
// while they run (oneDNN issue #4845): the handler's frame would be written there.
void StartSignalThread() {
  static std::once_flag once;
  std::call_once(once, [] {
    const sigset_t set = HandledSignals();
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
      for (;;) pause();  // handlers run here; the process ends without joining
    }).detach();
  });
}

void Install(int sig, void (*handler)(int)) {
  struct sigaction action = {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(sig, &action, nullptr);
  StartSignalThread();
}

}  // namespace

void BlockStopSignalsInThisThread() {
  const sigset_t set = HandledSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void InstallStopSignalHandlers() {
  Install(SIGTERM, OnStopSignal);
  Install(SIGUSR1, OnStopSignal);
}

void InstallInterruptHandlers() {
  static_assert(kInterruptWindowSeconds == 5, "the SIGINT message says 5 s");
  Install(SIGINT, OnInterrupt);
  Install(SIGHUP, OnHangup);
}

bool LocalStopRequested() { return g_stop != 0; }

void RequestStop() { g_stop = 1; }

bool StopRequestedOnAnyRank(RawComm& comm) {
  int32_t flag = g_stop ? 1 : 0;
  comm.AllReduce(&flag, 1, DType::kInt32, ReduceOp::kMax)->Wait();
  return flag != 0;
}

}  // namespace reid::dist
