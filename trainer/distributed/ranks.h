// Rank discovery: world size, rank and local rank from MPI (shared-memory split) when started by a
// launcher, with OMPI_* / SLURM_* fallbacks; world size 1 without MPI when started directly.
#pragma once

#include <functional>
#include <string>

namespace reid::dist {

// Where the numbers of a Ranks came from.
enum class RankSource { kSingle, kMpi, kEnv };
const char* RankSourceName(RankSource source);  // "single", "mpi", "env"

struct Ranks {
  int world_size = 1;
  int rank = 0;
  int local_rank = 0;  // index among the ranks of this node; device = local_rank
  int local_size = 1;  // ranks on this node
  bool mpi = false;    // MPI_Init was called (a launcher started us)
  RankSource source = RankSource::kSingle;
};

// Looks up an environment variable (getenv-like; returns nullptr when unset).
using EnvLookup = std::function<const char*(const char*)>;

// True when a launcher that lets MPI initialise (mpirun/mpiexec, srun --mpi=pmix or pmi2) started
// this process, judged from its environment: OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK/PMI_SIZE.
// A plain srun step (SLURM_* only, no PMI) is not: MPI could not initialise there.
bool LaunchedByMpi(const EnvLookup& env);

// Ranks as the launcher's variables describe them (OMPI_COMM_WORLD_*, then SLURM_*); world size 1
// when none is set. Used as the fallback for the local rank and to cross-check MPI.
Ranks RanksFromEnv(const EnvLookup& env);

// Initialises MPI (thread level MULTIPLE requested) when LaunchedByMpi, else returns world size 1
// without touching MPI. Idempotent (later calls return the first call's result). CHECK-fails
// when MPI is needed but cannot be initialised. Pass the result on: nothing else keeps it.
Ranks InitRanks();

// Calls MPI_Finalize if InitRanks initialised MPI. Call once at the end of main.
void FinalizeRanks();

// LibTorch intra-op threads for this rank (dist.intra_op_threads): `configured` when > 0, else
// the CPUs of this process's affinity mask (`affinity_cpus`) shared among the ranks that share
// them: all the node's ranks when the mask spans the machine's `online_cpus` (no binding), else
// as many as the node's ranks, spread evenly, put on a mask of this size (1 under srun
// --cpus-per-task, where each rank has CPUs of its own). At least 1.
int IntraOpThreads(int configured, const Ranks& ranks, int affinity_cpus, int online_cpus);
// The same with this process's affinity mask and the machine's online CPUs (base/cpus.h).
int IntraOpThreads(int configured, const Ranks& ranks);

// Ends every rank of the job at once (MPI_Abort when MPI is up, else _exit), after printing
// `message` to stderr. For fatal distributed errors (watchdog timeouts); never returns.
[[noreturn]] void AbortJob(const std::string& message, int code);

}  // namespace reid::dist
