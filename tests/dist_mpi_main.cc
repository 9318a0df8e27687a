// gtest main for the multi-process tests: MPI up before the tests, every rank's result agreed
// on at the end (a failure on any rank fails the job on all), MPI down after.
#include <glog/logging.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include "trainer/distributed/mpi_check.h"
#include "trainer/distributed/ranks.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  reid::dist::Ranks ranks = reid::dist::InitRanks();
  LOG(INFO) << "rank " << ranks.rank << " of " << ranks.world_size << " (local " << ranks.local_rank
            << " of " << ranks.local_size << ", from " << reid::dist::RankSourceName(ranks.source)
            << ")";
  int rc = RUN_ALL_TESTS();
  int worst = rc;
  if (ranks.mpi) REID_MPI_CHECK(MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
  reid::dist::FinalizeRanks();
  return worst;
}
