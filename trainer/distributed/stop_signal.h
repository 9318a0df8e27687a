// Preemption: SIGTERM / SIGUSR1 set a process-local flag; the trainer all-reduces it every step
// so that all ranks checkpoint at the same step and exit together. Training also treats SIGINT
// (Ctrl-C) and SIGHUP (its terminal closed) as such a stop request.
#pragma once

#include "trainer/distributed/comm.h"

namespace reid::dist {

// Installs handlers for SIGTERM and SIGUSR1 that only set the flag (async-signal-safe).
// The handlers run on a thread of their own: the first install blocks the handled signals in
// the calling thread, and so in every thread it starts afterwards, and starts a thread that takes
// them. Threads started earlier may still take them: call BlockStopSignalsInThisThread there when
// they run LibTorch's CPU kernels (e.g. its intra-op threads), as oneDNN's JIT kernels point the
// stack pointer into heap memory while they run, where a handler's frame would land.
void InstallStopSignalHandlers();

// Blocks the signals these handlers take in the calling thread, for good.
void BlockStopSignalsInThisThread();

// How long after a SIGINT a second one ends the process at once (status 130).
inline constexpr int kInterruptWindowSeconds = 5;

// `reid train` only: SIGINT and SIGHUP set the flag too, so that Ctrl-C or a closed terminal
// stops the run with a checkpoint (exit 0) instead of killing it.
//   - SIGINT prints one line to stderr; a second SIGINT within kInterruptWindowSeconds of the
//     previous one ends the process at once with status 130 (128 + SIGINT, as a shell reports a
//     process killed by Ctrl-C): no checkpoint beyond those already written. A SIGINT later than
//     that only repeats the request.
//   - SIGHUP behaves as SIGTERM. It also ignores SIGPIPE from then on: the terminal's reader of
//     a pipe (`reid train | tee log`) may be gone, and a write to it must not kill the process
//     before the checkpoint is written.
// Subcommands without a checkpoint to write (eval, extract, embed) keep the default SIGINT and
// SIGHUP: the process ends at once.
void InstallInterruptHandlers();

// True once this process received SIGTERM or SIGUSR1 (or SIGINT / SIGHUP after
// InstallInterruptHandlers, or RequestStop was called).
bool LocalStopRequested();

// Sets the local flag as a signal would (tests; an orderly stop requested by code).
void RequestStop();

// Collective: true on every rank when any rank's flag is set. Call every step on every rank.
bool StopRequestedOnAnyRank(RawComm& comm);

}  // namespace reid::dist
