// Helper for tests/dist_failure_test.sh: a job whose last rank fails while the others sit in a
// collective. Modes: kill (SIGKILL itself), exit (exit(1) early), hang (sleeps; the others'
// watchdog must abort the job after dist.timeout_s = 2 s), ok (finishes normally).
#include <glog/logging.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "trainer/distributed/mpi_comm.h"
#include "trainer/distributed/ranks.h"

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  const char* mode = argc > 1 ? argv[1] : "ok";
  reid::dist::Ranks ranks = reid::dist::InitRanks();
  reid::dist::MpiCommOptions options;
  options.timeout_s = 2.0;
  auto comm = reid::dist::MakeMpiComm(MPI_COMM_WORLD, options);
  const bool victim = ranks.rank == ranks.world_size - 1;
  std::vector<float> buf(1 << 20, 1.0f);
  for (int step = 0; step < 20; ++step) {
    if (victim && step == 5) {
      if (!std::strcmp(mode, "kill")) raise(SIGKILL);
      if (!std::strcmp(mode, "exit")) _exit(1);
      if (!std::strcmp(mode, "hang")) sleep(60);
    }
    comm->AllReduce(buf.data(), buf.size(), reid::dist::DType::kFloat32, reid::dist::ReduceOp::kAvg)
        ->Wait();
  }
  comm.reset();
  std::printf("rank %d finished\n", ranks.rank);
  reid::dist::FinalizeRanks();
  return 0;
}
