// What reid-launch runs: the rank count, the backend (mpirun or srun) and the command line of
// each attempt. The pieces are pure functions of the arguments and the environment (tested in
// plan_test.cc); MakeLaunchPlan glues them to this machine's PATH, /dev and hostfile.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "launcher/launch_args.h"

namespace reid::launcher {

// Looks up an environment variable (getenv-like; nullptr when unset).
using EnvLookup = std::function<const char*(const char*)>;

// GPUs this process may use: the entries of CUDA_VISIBLE_DEVICES when it is set (up to the first
// empty or negative one, as CUDA reads it; SLURM's "NoDevFiles" is none), else the /dev/nvidiaN
// character devices among `dev_entries` (names in /dev). MIG slices count as their parent GPU.
int CountVisibleGpus(const EnvLookup& env, const std::vector<std::string>& dev_entries);

// Cores this process may run on (its CPU affinity mask; the online cores when that is unknown).
int UsableCores();

// Ranks per node: --nproc_per_node, or one per visible GPU, 1 without GPUs. More ranks than GPUs
// (two ranks would share a device), or without GPUs more CPU ranks than `usable_cores` (ranks
// would share cores, and a mistyped --nproc_per_node=1000000 would fork a million trainers), is
// InvalidArgument unless --oversubscribe. The cores of this node stand for every node's.
StatusOr<int> ProcsPerNode(const LaunchArgs& args, int visible_gpus, int usable_cores);

// Nodes named by an Open MPI hostfile's text, duplicates counted once. Grammar, per line:
//   [HOST [slots=N] [max_slots=N]] [# comment]
// HOST is an RFC 1123 host name (dot-separated labels of 1-63 letters, digits and '-', not
// starting or ending with '-'; 253 characters in all), an IPv4 address (a name of digits and dots
// must be one) or an IPv6 address; N is 1..1000000; blank lines and comments are skipped, CR LF
// line ends accepted. InvalidArgument naming `path`, the first bad line and its bad word
// (non-printable bytes shown as \xNN), or when no line names a node.
StatusOr<int> CountHostfileNodes(const std::string& text, const std::string& path);

// CountHostfileNodes of the file at `path`, read with base::ReadRegularFile: only a regular file
// (a FIFO, a device or a directory is refused before anything is read: opened O_NONBLOCK and
// checked with fstat) of at most kMaxHostfileBytes. Errors name --hostfile and the path.
constexpr size_t kMaxHostfileBytes = 1 << 20;
StatusOr<int> ReadHostfileNodes(const std::string& path);

// kMpirun or kSrun: --launcher, else srun inside a SLURM allocation (SLURM_JOB_ID set) unless a
// hostfile was given, else mpirun.
Backend ChooseBackend(const LaunchArgs& args, const EnvLookup& env);

// Names among `env_names` that remote ranks need: NCCL_*, UCX_*, CUDA_*, OMP_*, REID_*, PATH,
// LD_LIBRARY_PATH, GLIBC_TUNABLES (mpirun starts remote ranks with its own environment only
// for the variables named with -x).
std::vector<std::string> ExportedEnvNames(const std::vector<std::string>& env_names);

// The command with --resume=auto appended unless it already has --resume=auto (a later flag
// wins in gflags, so an earlier --resume=PATH is overridden: restarts take the newest checkpoint).
std::vector<std::string> WithResumeAuto(std::vector<std::string> command);

// The command of a restart: WithResumeAuto, except when the command names a checkpoint
// (--resume=PATH) and its --output_dir has no checkpoint of its own yet (no
// DIR/checkpoints/index.txtpb, as `reid train` writes it; `file_exists` tells): then the
// command as it was, so that a job that failed before its first checkpoint starts from PATH
// again instead of from scratch.
std::vector<std::string> RestartCommand(const std::vector<std::string>& command,
                                        const std::function<bool(const std::string&)>& file_exists);

struct LaunchPlan {
  Backend backend = Backend::kMpirun;  // never kAuto
  std::string launcher;                // resolved path of mpirun or srun
  int procs_per_node = 1;
  int nodes = 1;  // hostfile nodes (mpirun) or SLURM_NNODES (srun)
  std::string hostfile;
  std::vector<std::string> command;                      // command[0] resolved to a path
  std::vector<std::pair<std::string, std::string>> env;  // set for the job (defaults)
  std::vector<std::string> exported_env;                 // mpirun -x NAME
  int max_restarts = 0;
  double restart_delay_s = 0;
};

// Variables the launcher sets for the job when they are unset: NCCL_DEBUG=WARN (NCCL's own
// errors reach the log).
std::vector<std::pair<std::string, std::string>> DefaultJobEnv(const EnvLookup& env);

// argv of the mpirun that starts `command` on every rank:
//   mpirun -np N*nodes --map-by ppr:N:node --oversubscribe --bind-to none [--hostfile F]
//          -x NAME... COMMAND
// ppr pins N ranks on each node whatever its core count says (slots count cores, we count GPUs);
// --bind-to none because Open MPI binds each rank to one core by default (np <= 2) and the
// rank's data-loader and intra-op threads would then share that core.
std::vector<std::string> MpirunArgv(const LaunchPlan& plan,
                                    const std::vector<std::string>& command);

// argv of the srun inside an allocation:
//   srun --mpi=pmix --kill-on-bad-exit=1 --nodes=M --ntasks=N*M --ntasks-per-node=N COMMAND
// (PMIx: Debian's Open MPI has no PMI-2; -K ends the step when a rank fails, as mpirun does).
std::vector<std::string> SrunArgv(const LaunchPlan& plan, const std::vector<std::string>& command);

// The whole argv of attempt `attempt` (0 = the first run; later ones resume automatically).
std::vector<std::string> AttemptArgv(const LaunchPlan& plan, int attempt);

// `name` as execvp would find it: itself when it contains '/', else the first executable match
// on `path_env` (':'-separated). Empty when there is none.
std::string FindExecutable(const std::string& name, const char* path_env);

// A command line for logs: arguments quoted for a POSIX shell where needed.
std::string ShellJoin(const std::vector<std::string>& argv);

// Everything above applied to this process: its environment, /dev, PATH, the cores it may use
// and the hostfile. Exit-2 errors: mpirun (or srun) missing, too many ranks for the GPUs or cores,
// command not found, a hostfile that is missing, not a regular file, too large, empty or not in
// the grammar above.
StatusOr<LaunchPlan> MakeLaunchPlan(const LaunchArgs& args);

}  // namespace reid::launcher
