// Stop flag set by SIGTERM / SIGUSR1 and agreed on by all ranks (see stop_signal.h).
#include "trainer/distributed/stop_signal.h"

#include <csignal>
#include <cstdint>

namespace reid::dist {
namespace {

volatile std::sig_atomic_t g_stop = 0;

void OnStopSignal(int) { g_stop = 1; }

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

bool LocalStopRequested() { return g_stop != 0; }

void RequestStop() { g_stop = 1; }

bool StopRequestedOnAnyRank(RawComm& comm) {
  int32_t flag = g_stop ? 1 : 0;
  comm.AllReduce(&flag, 1, DType::kInt32, ReduceOp::kMax)->Wait();
  return flag != 0;
}

}  // namespace reid::dist
