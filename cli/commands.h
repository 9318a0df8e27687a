// The subcommands of the `reid` binary. Each Run* takes the arguments left after flag parsing
// (argv[0] = "reid <name>") and every --set value in command-line order (gflags would keep only
// the last, so main collects them before gflags sees the arguments), and returns the process exit
// status: 0 success, 1 failure, 2 user error (bad config, flag, path or data), reported before any
// collective starts; `reid train` also 75 (stopped by a signal after writing its checkpoint).
// Errors travel as a Status (base/status.h) up to the subcommand, which prints it and maps it to
// the exit status with Fail().
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace reid::trainer {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
// `reid train` stopped by a signal (preemption, Ctrl-C) after writing its checkpoint: resume with
// --resume=auto. sysexits.h's EX_TEMPFAIL ("temporary failure; retry later"), which job scripts
// test to requeue.
inline constexpr int kExitStopped = 75;

// The one way a subcommand reports a failed Status: prints "error: reid CMD: message" to stderr
// on rank 0 (every rank reaches the same verdict; one message is enough) and returns the status's
// exit code (2 for user errors, 1 otherwise; see Status::exit_code).
int Fail(const std::string& cmd, const Status& s, int rank = 0);

int RunCkpt(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunClipEncode(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunEmbed(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunExport(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunImport(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunDatasetStats(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunEval(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunExtract(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunPrintConfig(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunReport(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunSynth(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunTokenize(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunTrain(int argc, char** argv, const std::vector<std::string>& set_overrides);
int RunVersion(int argc, char** argv, const std::vector<std::string>& set_overrides);

}  // namespace reid::trainer
