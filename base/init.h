// Process start-up of the `reid` command: glog, the failure signal handler, the terminate handler
// and per-rank log files. Flags are not parsed here: the command's main parses them (gflags) first.
#pragma once

#include <string>

namespace reid::base {

// Initialises glog (to stderr until SetupRunLogging) and installs the failure signal handler that
// prints a stack trace on SIGSEGV/SIGABRT. Call once flags are parsed (the `reid` command's main
// parses them first); later calls do nothing.
void GlobalInit(const char* argv0);

// Makes std::terminate print "error: PROGRAM: WHAT" (the first line of the exception's what(),
// or why there is none) to stderr and exit with status 1, instead of aborting (SIGABRT, a core,
// glog's stack trace): an exception that escapes a thread, or a noexcept function, is then one
// line and a failure status like one that reaches main. `program` must outlive the process.
void InstallTerminateHandler(const char* program);

// libgomp (LibTorch's OpenMP runtime) reads OMP_WAIT_POLICY once, when it loads; by default its
// idle workers spin for milliseconds after every parallel region, which on a machine with as many
// busy threads as cores takes the cores from OpenBLAS's own workers (the matrix products) and
// from other processes. Unless the environment sets OMP_WAIT_POLICY or GOMP_SPINCOUNT, this
// re-executes the program (same pid, arguments and otherwise the same environment) with
// OMP_WAIT_POLICY=PASSIVE, under which idle workers sleep at once. Call first thing in main();
// returns only when it did not re-execute (the variables were set, or exec failed).
void ReexecWithPassiveOpenMP(char** argv);

// Keeps freed memory in the process for reuse (glibc's malloc): blocks up to 32 MB come from the
// heap instead of fresh mappings, and the heap is never trimmed. A training step frees and
// allocates the same activations every time; given back to the kernel, every page faults in
// again on the next step (a ViT-B/16 step on CPU: 77,000 faults, a few microseconds each on the
// development VM). The process then holds its peak heap. No-op without glibc.
void KeepFreedMemory();

// Sends this rank's log to `run_dir`/logs/rank<rank>.log (all severities); stderr keeps
// warnings and errors (rank 0 prints progress lines on stdout itself). Creates the folder
// (std::filesystem throws when it cannot). Returns the log path.
std::string SetupRunLogging(const std::string& run_dir, int rank);

}  // namespace reid::base
