// NCCL backend on real GPUs: collectives vs serial results. Skips itself without a GPU (or with
// fewer GPUs on this node than ranks). Runs alone or under `mpirun -np N` (one GPU per rank).
#include "trainer/distributed/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <glog/logging.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <iostream>
#include <vector>

#include "trainer/distributed/mpi_comm.h"
#include "trainer/distributed/ranks.h"

namespace reid::dist {
namespace {

RawComm* g_bootstrap = nullptr;

float Value(int rank, size_t i) { return static_cast<float>((i * 31 + rank * 17) % 23) - 11.0f; }

class NcclCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Ranks ranks = InitRanks();  // already initialised by main: returns its result
    if (CudaDeviceCount() < ranks.local_size) {
      GTEST_SKIP() << "needs " << ranks.local_size << " GPU(s) on this node, found "
                   << CudaDeviceCount();
    }
    ASSERT_EQ(cudaStreamCreate(&compute_), cudaSuccess);
    comm_ = MakeNcclComm(*g_bootstrap, ranks.local_rank, compute_);
  }
  void TearDown() override {
    comm_.reset();
    if (compute_) cudaStreamDestroy(compute_);
  }
  // Host -> device copy of `host` on the compute stream.
  void* ToDevice(const std::vector<float>& host) {
    void* dev = nullptr;
    EXPECT_EQ(cudaMalloc(&dev, std::max<size_t>(4, host.size() * 4)), cudaSuccess);
    cudaMemcpyAsync(dev, host.data(), host.size() * 4, cudaMemcpyHostToDevice, compute_);
    buffers_.push_back(dev);
    return dev;
  }
  std::vector<float> ToHost(const void* dev, size_t n) {
    std::vector<float> host(n);
    cudaMemcpyAsync(host.data(), dev, n * 4, cudaMemcpyDeviceToHost, compute_);
    EXPECT_EQ(cudaStreamSynchronize(compute_), cudaSuccess);
    return host;
  }
  ~NcclCommTest() override {
    for (void* p : buffers_) cudaFree(p);
  }

  cudaStream_t compute_ = nullptr;
  std::unique_ptr<RawComm> comm_;
  std::vector<void*> buffers_;
};

TEST_F(NcclCommTest, AllReduceSumAvgMax) {
  const int n_ranks = comm_->size(), rank = comm_->rank();
  for (size_t n : {1ul, 1000ul, (1ul << 22) + 3}) {
    std::vector<float> mine(n), sum(n, 0), max(n, -1e30f);
    for (size_t i = 0; i < n; ++i) {
      mine[i] = Value(rank, i);
      for (int r = 0; r < n_ranks; ++r) {
        sum[i] += Value(r, i);
        max[i] = std::max(max[i], Value(r, i));
      }
    }
    void* d = ToDevice(mine);
    comm_->AllReduce(d, n, DType::kFloat32, ReduceOp::kSum)->Wait();
    EXPECT_EQ(ToHost(d, n), sum) << n;
    d = ToDevice(mine);
    comm_->AllReduce(d, n, DType::kFloat32, ReduceOp::kMax)->Wait();
    EXPECT_EQ(ToHost(d, n), max) << n;
    d = ToDevice(mine);
    comm_->AllReduce(d, n, DType::kFloat32, ReduceOp::kAvg)->Wait();
    std::vector<float> avg = ToHost(d, n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(avg[i], sum[i] / n_ranks, 1e-5) << i;
  }
}

TEST_F(NcclCommTest, BroadcastAllGatherAllGatherVBarrier) {
  const int n_ranks = comm_->size(), rank = comm_->rank();
  const size_t n = 4099;
  std::vector<float> mine(n);
  for (size_t i = 0; i < n; ++i) mine[i] = Value(rank, i);
  for (int root = 0; root < n_ranks; ++root) {
    void* d = ToDevice(mine);
    comm_->Broadcast(d, n, DType::kFloat32, root)->Wait();
    std::vector<float> got = ToHost(d, n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], Value(root, i));
  }
  void* send = ToDevice(mine);
  void* recv = ToDevice(std::vector<float>(n * n_ranks));
  comm_->AllGather(send, n, recv, DType::kFloat32)->Wait();
  std::vector<float> all = ToHost(recv, n * n_ranks);
  for (int r = 0; r < n_ranks; ++r) {
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(all[r * n + i], Value(r, i));
  }
  std::vector<size_t> counts;
  size_t total = 0;
  for (int r = 0; r < n_ranks; ++r) total += counts.emplace_back(r * 100 + 1);
  void* vsend = ToDevice(std::vector<float>(mine.begin(), mine.begin() + counts[rank]));
  void* vrecv = ToDevice(std::vector<float>(total));
  comm_->AllGatherV(vsend, vrecv, counts, DType::kFloat32)->Wait();
  std::vector<float> v = ToHost(vrecv, total);
  size_t off = 0;
  for (int r = 0; r < n_ranks; ++r) {
    for (size_t i = 0; i < counts[r]; ++i) ASSERT_EQ(v[off + i], Value(r, i));
    off += counts[r];
  }
  comm_->Barrier()->Wait();
}

}  // namespace
}  // namespace reid::dist

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  google::InitGoogleLogging(argv[0]);
  reid::dist::Ranks ranks = reid::dist::InitRanks();
  std::unique_ptr<reid::dist::RawComm> bootstrap =
      ranks.mpi ? reid::dist::MakeMpiComm(MPI_COMM_WORLD, {}) : reid::dist::MakeLocalComm();
  reid::dist::g_bootstrap = bootstrap.get();
  // Too few GPUs: report Skipped to ctest (SKIP_RETURN_CODE 77) rather than a vacuous pass.
  if (reid::dist::CudaDeviceCount() < ranks.local_size) {
    std::cout << "SKIPPED: needs " << ranks.local_size << " GPU(s) on this node, found "
              << reid::dist::CudaDeviceCount() << "\n";
    bootstrap.reset();
    reid::dist::FinalizeRanks();
    return 77;
  }
  int rc = RUN_ALL_TESTS();
  bootstrap.reset();
  reid::dist::FinalizeRanks();
  return rc;
}
