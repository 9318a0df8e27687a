// Preemption: SIGTERM / SIGUSR1 set a process-local flag; the trainer all-reduces it every step
// so that all ranks checkpoint at the same step and exit together.
#pragma once

#include "trainer/distributed/comm.h"

namespace reid::dist {

// Installs handlers for SIGTERM and SIGUSR1 that only set the flag (async-signal-safe).
void InstallStopSignalHandlers();

// True once this process received SIGTERM or SIGUSR1 (or RequestStop was called).
bool LocalStopRequested();

// Sets the local flag as a signal would (tests; an orderly stop requested by code).
void RequestStop();

// Collective: true on every rank when any rank's flag is set. Call every step on every rank.
bool StopRequestedOnAnyRank(RawComm& comm);

}  // namespace reid::dist
