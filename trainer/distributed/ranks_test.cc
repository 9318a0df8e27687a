// Unit tests of rank discovery from launcher variables, DDP bucket assignment and the
// world-size-1 communicator (no MPI needed).
#include "trainer/distributed/ranks.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <map>
#include <string>

#include "trainer/distributed/bucket_assignment.h"
#include "trainer/distributed/comm.h"
#include "trainer/distributed/stop_signal.h"

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

TEST(RanksTest, IntraOpThreadsShareTheCores) {
  Ranks r;
  r.local_size = 4;
  EXPECT_EQ(IntraOpThreads(0, r, 16), 4);
  EXPECT_EQ(IntraOpThreads(0, r, 2), 1);
  EXPECT_EQ(IntraOpThreads(3, r, 16), 3);
}

TEST(BucketAssignmentTest, FirstBucketSmallThenCapInReverse) {
  const int64_t mib = 1 << 20;
  // Parameters in registration order: 0.5, 0.6, 10, 10, 10, 0.1 MiB, all float32.
  std::vector<int64_t> bytes = {mib / 2, mib * 6 / 10, 10 * mib, 10 * mib, 10 * mib, mib / 10};
  auto buckets = AssignBuckets(bytes, std::vector<int>(bytes.size(), 0), mib, 25 * mib);
  // First bucket closes once >= 1 MiB: {0, 1}; then {2, 3, 4} reaches 30 MiB >= 25; then {5}.
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0], (std::vector<size_t>{5}));
  EXPECT_EQ(buckets[1], (std::vector<size_t>{2, 3, 4}));
  EXPECT_EQ(buckets[2], (std::vector<size_t>{0, 1}));
}

TEST(BucketAssignmentTest, DtypesNeverShareABucket) {
  auto buckets = AssignBuckets({4, 8, 4, 8}, {0, 1, 0, 1}, 1 << 20, 25 << 20);
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0], (std::vector<size_t>{1, 3}));
  EXPECT_EQ(buckets[1], (std::vector<size_t>{0, 2}));
}

TEST(BucketAssignmentTest, EveryParameterExactlyOnce) {
  std::vector<int64_t> bytes;
  for (int i = 0; i < 100; ++i) bytes.push_back((i * 7919) % 5000 + 1);
  auto buckets = AssignBuckets(bytes, std::vector<int>(100, 0), 3000, 20000);
  std::vector<int> seen(100, 0);
  for (const auto& b : buckets) {
    for (size_t i : b) seen[i]++;
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], 1) << i;
  EXPECT_GT(buckets.size(), 5u);
}

TEST(LocalCommTest, CollectivesAreIdentityOrCopy) {
  auto comm = MakeLocalComm();
  std::vector<float> buf = {1, 2, 3};
  comm->AllReduce(buf.data(), 3, DType::kFloat32, ReduceOp::kAvg)->Wait();
  EXPECT_EQ(buf, (std::vector<float>{1, 2, 3}));
  std::vector<float> out(3);
  comm->AllGatherV(buf.data(), out.data(), {3}, DType::kFloat32)->Wait();
  EXPECT_EQ(out, buf);
}

TEST(StopSignalTest, SignalSetsFlagAndAllReduceSeesIt) {
  InstallStopSignalHandlers();
  auto comm = MakeLocalComm();
  EXPECT_FALSE(StopRequestedOnAnyRank(*comm));
  raise(SIGUSR1);
  EXPECT_TRUE(LocalStopRequested());
  EXPECT_TRUE(StopRequestedOnAnyRank(*comm));
}

}  // namespace
}  // namespace reid::dist
