// Unit tests of rank discovery from launcher variables (no MPI needed).
#include "trainer/distributed/ranks.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "base/cpus.h"

namespace reid::dist {
namespace {

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(RanksTest, NoLauncherMeansWorldSizeOne) {
  auto env = FakeEnv({{"HOME", "/root"}});
  EXPECT_FALSE(LaunchedByMpi(env));
  Ranks r = RanksFromEnv(env);
  EXPECT_EQ(r.world_size, 1);
  EXPECT_EQ(r.rank, 0);
  EXPECT_EQ(r.local_rank, 0);
  EXPECT_EQ(r.source, RankSource::kSingle);
  EXPECT_STREQ(RankSourceName(r.source), "single");
}

TEST(RanksTest, OpenMpiVariables) {
  auto env = FakeEnv({{"OMPI_COMM_WORLD_SIZE", "8"},
                      {"OMPI_COMM_WORLD_RANK", "5"},
                      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                      {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  EXPECT_TRUE(LaunchedByMpi(env));
  Ranks r = RanksFromEnv(env);
  EXPECT_EQ(r.world_size, 8);
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.local_size, 4);
  EXPECT_EQ(r.source, RankSource::kEnv);
}

TEST(RanksTest, SlurmVariables) {
  auto env = FakeEnv({{"SLURM_PROCID", "6"},
                      {"SLURM_STEP_ID", "0"},
                      {"SLURM_NTASKS", "8"},
                      {"SLURM_LOCALID", "2"},
                      {"SLURM_TASKS_PER_NODE", "4(x2)"}});
  EXPECT_FALSE(LaunchedByMpi(env));  // srun without PMIx cannot initialise MPI
  Ranks r = RanksFromEnv(env);
  EXPECT_EQ(r.world_size, 8);
  EXPECT_EQ(r.rank, 6);
  EXPECT_EQ(r.local_rank, 2);
  EXPECT_EQ(r.local_size, 4);
  EXPECT_TRUE(LaunchedByMpi(FakeEnv({{"PMIX_RANK", "0"}})));
}

TEST(RanksTest, SbatchScriptWithoutStepIsSingle) {
  Ranks r = RanksFromEnv(FakeEnv({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "8"}}));
  EXPECT_EQ(r.world_size, 1);
  EXPECT_EQ(r.source, RankSource::kSingle);
}

TEST(RanksTest, InitWithoutLauncherDoesNotTouchMpi) {
  if (LaunchedByMpi([](const char* n) { return std::getenv(n); })) GTEST_SKIP() << "under mpirun";
  Ranks r = InitRanks();
  EXPECT_EQ(r.world_size, 1);
  EXPECT_FALSE(r.mpi);
  FinalizeRanks();
}

TEST(RanksTest, IntraOpThreadsFollowTheAffinityMask) {
  Ranks r;
  r.local_size = 4;
  EXPECT_EQ(IntraOpThreads(0, r, 16, 16), 4);  // unbound (mpirun --bind-to none): shared by 4
  EXPECT_EQ(IntraOpThreads(0, r, 2, 2), 1);
  EXPECT_EQ(IntraOpThreads(3, r, 16, 16), 3);  // dist.intra_op_threads wins
  // srun --cpus-per-task=12 on a 128-CPU node: 12 CPUs of its own, not 128 / 4.
  EXPECT_EQ(IntraOpThreads(0, r, 12, 128), 12);
  r.local_size = 8;
  EXPECT_EQ(IntraOpThreads(0, r, 12, 96), 12);  // 8 x 12 = the whole node, each its own 12
  // mpirun --bind-to socket, 4 ranks on 2 sockets of 32: two ranks per socket mask.
  r.local_size = 4;
  EXPECT_EQ(IntraOpThreads(0, r, 32, 64), 16);
  r.local_size = 1;
  EXPECT_EQ(IntraOpThreads(0, r, 6, 64), 6);  // taskset -c 0-5
}

TEST(RanksTest, IntraOpThreadsOfThisProcessStayWithinItsMask) {
  Ranks r;
  const int threads = IntraOpThreads(0, r);
  EXPECT_GE(threads, 1);
  EXPECT_LE(threads, base::AffinityCpuCount());
}

}  // namespace
}  // namespace reid::dist
