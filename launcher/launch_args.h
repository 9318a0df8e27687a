// reid-launch's command line: its own flags, then `--` and the trainer command it starts.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"

namespace reid::launcher {

// How the ranks are started: mpirun, or srun inside a SLURM allocation (kAuto decides by
// SLURM_JOB_ID).
enum class Backend { kAuto, kMpirun, kSrun };

struct LaunchArgs {
  int nproc_per_node = 0;      // ranks per node; 0 = one per visible GPU (1 without GPUs)
  bool oversubscribe = false;  // allow more ranks per node than GPUs (or cores without GPUs)
  std::string hostfile;        // Open MPI hostfile (one node per line); empty = this node only
  int max_restarts = 0;        // whole-job restarts after a failure
  double restart_delay_s = 5;  // wait before each restart
  std::string mpirun = "mpirun";
  std::string srun = "srun";
  Backend backend = Backend::kAuto;
  bool help = false;
  std::vector<std::string> command;  // what follows `--` (or the first non-flag argument)
};

// The usage text printed by --help and after a command-line error.
extern const char kLaunchUsage[];

// Parses argv[1..] (`--flag=value` or `--flag value`). InvalidArgument names the flag and value
// at fault; a missing command is an error unless --help was given.
StatusOr<LaunchArgs> ParseLaunchArgs(const std::vector<std::string>& args);

}  // namespace reid::launcher
