// Rank discovery (see ranks.h).
#include "trainer/distributed/ranks.h"

#include <glog/logging.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "base/cpus.h"
#include "trainer/distributed/mpi_check.h"

namespace reid::dist {
namespace {

// InitRanks' result, for its idempotence and FinalizeRanks (not readable from outside).
Ranks g_ranks;
bool g_initialized = false;

// Parses an integer variable; returns `fallback` when unset or not a number.
int EnvInt(const EnvLookup& env, const char* name, int fallback) {
  const char* value = env(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  long parsed = std::strtol(value, &end, 10);
  if (*end != '\0') return fallback;
  return static_cast<int>(parsed);
}

const char* RealEnv(const char* name) { return std::getenv(name); }

}  // namespace

const char* RankSourceName(RankSource source) {
  switch (source) {
    case RankSource::kSingle:
      return "single";
    case RankSource::kMpi:
      return "mpi";
    case RankSource::kEnv:
      return "env";
  }
  return "?";
}

void MpiCallFailed(int rc, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  int rank = -1, initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  LOG(FATAL) << file << ":" << line << ": rank " << rank << ": " << call << " failed (" << rc
             << "): " << std::string(text, len);
  std::abort();  // not reached
}

bool LaunchedByMpi(const EnvLookup& env) {
  if (env("OMPI_COMM_WORLD_SIZE") || env("PMIX_RANK") || env("PMI_RANK") || env("PMI_SIZE")) {
    return true;
  }
  // srun without a PMI plugin cannot initialise MPI; srun --mpi=pmix sets PMIX_RANK (above).
  return false;
}

Ranks RanksFromEnv(const EnvLookup& env) {
  Ranks r;
  if (env("OMPI_COMM_WORLD_SIZE")) {
    r.world_size = EnvInt(env, "OMPI_COMM_WORLD_SIZE", 1);
    r.rank = EnvInt(env, "OMPI_COMM_WORLD_RANK", 0);
    r.local_rank = EnvInt(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0);
    r.local_size = EnvInt(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1);
    r.source = RankSource::kEnv;
  } else if (env("SLURM_PROCID") && env("SLURM_STEP_ID")) {
    r.world_size = EnvInt(env, "SLURM_NTASKS", EnvInt(env, "SLURM_NPROCS", 1));
    r.rank = EnvInt(env, "SLURM_PROCID", 0);
    r.local_rank = EnvInt(env, "SLURM_LOCALID", 0);
    // SLURM_TASKS_PER_NODE looks like "4(x2)"; its leading number is this node's count on
    // homogeneous allocations. SLURM_NTASKS_PER_NODE is only set when requested explicitly.
    r.local_size = EnvInt(env, "SLURM_NTASKS_PER_NODE", -1);
    if (r.local_size < 0) {
      const char* tpn = env("SLURM_TASKS_PER_NODE");
      r.local_size = tpn ? std::atoi(tpn) : 1;
    }
    if (r.local_size <= r.local_rank) r.local_size = r.local_rank + 1;
    r.source = RankSource::kEnv;
  }
  return r;
}

Ranks InitRanks() {
  if (g_initialized) return g_ranks;
  g_initialized = true;
  Ranks env_ranks = RanksFromEnv(RealEnv);
  if (!LaunchedByMpi(RealEnv)) {
    g_ranks = Ranks();  // single-process local mode: MPI is not touched at all
    return g_ranks;
  }
  int already = 0;
  REID_MPI_CHECK(MPI_Initialized(&already));
  if (!already) {
    int provided = 0;
    REID_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided));
    if (provided < MPI_THREAD_SERIALIZED) {
      LOG(WARNING) << "MPI provides thread level " << provided
                   << " (< SERIALIZED); communication runs on a helper thread regardless";
    }
  }
  Ranks r;
  r.mpi = true;
  r.source = RankSource::kMpi;
  REID_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &r.world_size));
  REID_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r.rank));
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, r.rank, MPI_INFO_NULL, &node) ==
      MPI_SUCCESS) {
    REID_MPI_CHECK(MPI_Comm_rank(node, &r.local_rank));
    REID_MPI_CHECK(MPI_Comm_size(node, &r.local_size));
    REID_MPI_CHECK(MPI_Comm_free(&node));
  } else {
    LOG(WARNING) << "MPI shared-memory split failed; local rank from the launcher's variables";
    r.local_rank = env_ranks.local_rank;
    r.local_size = env_ranks.local_size;
  }
  if (env_ranks.source == RankSource::kEnv &&
      (env_ranks.world_size != r.world_size || env_ranks.rank != r.rank)) {
    LOG(WARNING) << "launcher variables say rank " << env_ranks.rank << "/" << env_ranks.world_size
                 << " but MPI says " << r.rank << "/" << r.world_size << "; using MPI's";
  }
  g_ranks = r;
  return g_ranks;
}

void FinalizeRanks() {
  if (!g_ranks.mpi) return;
  int finalized = 0;
  REID_MPI_CHECK(MPI_Finalized(&finalized));
  if (!finalized) REID_MPI_CHECK(MPI_Finalize());
  g_ranks.mpi = false;
}

int IntraOpThreads(int configured, const Ranks& ranks, int affinity_cpus, int online_cpus) {
  if (configured > 0) return configured;
  const int64_t local = std::max(1, ranks.local_size);
  const int64_t mask = std::max(1, affinity_cpus);
  const int64_t online = std::max<int64_t>(mask, online_cpus);
  const int64_t sharing = std::clamp<int64_t>((local * mask + online - 1) / online, 1, local);
  return static_cast<int>(std::max<int64_t>(1, mask / sharing));
}

int IntraOpThreads(int configured, const Ranks& ranks) {
  return IntraOpThreads(configured, ranks, base::AffinityCpuCount(), base::OnlineCpuCount());
}

void AbortJob(const std::string& message, int code) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  REID_MPI_CHECK(MPI_Initialized(&initialized));
  REID_MPI_CHECK(MPI_Finalized(&finalized));
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);  // does not return
  _exit(code);
}

}  // namespace reid::dist
