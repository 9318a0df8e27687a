// The subcommands of the `reid` binary. Each Run* takes the arguments left after flag parsing
// (argv[0] = "reid <name>") and returns the process exit status: 0 success, 1 failure,
// 2 user error (bad config, flag, path or data), reported before any collective starts.
#pragma once

#include <string>
#include <vector>

namespace reid::trainer {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// All values given with --set, in command-line order (gflags keeps only the last one, so main
// collects them before gflags sees the arguments).
std::vector<std::string>& SetOverrides();

int RunCkpt(int argc, char** argv);
int RunClipEncode(int argc, char** argv);
int RunDatasetStats(int argc, char** argv);
int RunEval(int argc, char** argv);
int RunExtract(int argc, char** argv);
int RunPrintConfig(int argc, char** argv);
int RunSynth(int argc, char** argv);
int RunTokenize(int argc, char** argv);
int RunTrain(int argc, char** argv);
int RunVersion(int argc, char** argv);

}  // namespace reid::trainer
