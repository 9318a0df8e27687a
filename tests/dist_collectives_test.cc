// Collectives under mpirun (2 and 3 ranks) against results computed serially from every rank's
// inputs: all-reduce sum/avg/max, broadcast, all-gather(-v), barrier, over many sizes, dtypes and
// the three all-reduce paths (MPI_Allreduce, ring, tiny chunks); the job's communicator from the
// config. (The cross-rank model check is dist_grad_sync_test.cc's, the agreed stop flag
// dist_stop_signal_test.cc's.)
#include <gtest/gtest.h>

#include <cstdint>

#include "trainer/distributed/communicator.h"
#include "trainer/distributed/mpi_comm.h"

namespace reid::dist {
namespace {

// Small integers (exact in every dtype, sums of 3 ranks fit uint8).
torch::Tensor Input(int rank, int64_t n, torch::ScalarType dtype) {
  torch::Tensor i = torch::arange(n, torch::kLong);
  torch::Tensor v = (i * 31 + rank * 17) % 23;
  if (dtype != torch::kByte) v = v - 11;
  if (dtype == torch::kBool) v = ((i + rank) % 3) == 0;
  return v.to(dtype);
}

std::vector<std::unique_ptr<Communicator>> Comms() {
  std::vector<std::unique_ptr<Communicator>> comms;
  MpiCommOptions plain;
  plain.timeout_s = 120;
  comms.push_back(std::make_unique<Communicator>(MakeMpiComm(MPI_COMM_WORLD, plain)));
  MpiCommOptions ring = plain;
  ring.ring_min_bytes = 0;
  ring.chunk_bytes = 4096;  // many ring pieces
  comms.push_back(std::make_unique<Communicator>(MakeMpiComm(MPI_COMM_WORLD, ring)));
  MpiCommOptions no_ring = plain;
  no_ring.ring_min_bytes = SIZE_MAX;
  no_ring.chunk_bytes = 1000;  // odd chunk: pieces cross element boundaries of 8-byte types
  no_ring.plain_chunk_bytes = 1000;
  comms.push_back(std::make_unique<Communicator>(MakeMpiComm(MPI_COMM_WORLD, no_ring)));
  return comms;
}

const std::vector<int64_t> kSizes = {1, 2, 3, 17, 1000, 4099, 65537, (1 << 20) + 3};

// The tiny-chunk communicators (index > 0) make thousands of calls for the largest size: skip it.
bool Skip(size_t comm_index, int64_t n) { return comm_index > 0 && n > 100000; }
const std::vector<torch::ScalarType> kTypes = {torch::kFloat,    torch::kDouble, torch::kInt,
                                               torch::kLong,     torch::kByte,   torch::kHalf,
                                               torch::kBFloat16, torch::kShort};

TEST(CollectivesTest, AllReduceSumMaxAvgMatchSerial) {
  auto comms = Comms();
  for (size_t c = 0; c < comms.size(); ++c) {
    auto& comm = comms[c];
    const int n_ranks = comm->size();
    for (int64_t n : kSizes) {
      if (Skip(c, n)) continue;
      for (auto dtype : kTypes) {
        torch::Tensor sum = torch::zeros({n}, torch::kDouble), max;
        for (int r = 0; r < n_ranks; ++r) {
          torch::Tensor in = Input(r, n, dtype).to(torch::kDouble);
          sum += in;
          max = r == 0 ? in : torch::maximum(max, in);
        }
        torch::Tensor t = Input(comm->rank(), n, dtype);
        comm->AllReduce(t, ReduceOp::kSum);
        ASSERT_TRUE(t.to(torch::kDouble).equal(sum)) << "sum n=" << n << " " << dtype;
        t = Input(comm->rank(), n, dtype);
        comm->AllReduce(t, ReduceOp::kMax);
        ASSERT_TRUE(t.to(torch::kDouble).equal(max)) << "max n=" << n << " " << dtype;
        if (torch::isFloatingType(dtype)) {
          t = Input(comm->rank(), n, dtype);
          comm->AllReduce(t, ReduceOp::kAvg);
          double err = (t.to(torch::kDouble) - sum / n_ranks).abs().max().item<double>();
          ASSERT_LE(err, dtype == torch::kBFloat16 ? 0.07
                         : dtype == torch::kHalf   ? 0.005
                                                   : 1e-6)
              << "avg n=" << n << " " << dtype;
        }
      }
    }
  }
}

TEST(CollectivesTest, RandomFloatsAgreeBitwiseAcrossRanks) {
  auto comms = Comms();
  for (auto& comm : comms) {
    torch::manual_seed(100 + comm->rank());
    torch::Tensor t = torch::randn({300001});
    torch::Tensor expected = torch::zeros({300001}, torch::kDouble);
    for (int r = 0; r < comm->size(); ++r) {
      torch::manual_seed(100 + r);
      expected += torch::randn({300001}).to(torch::kDouble);
    }
    comm->AllReduce(t, ReduceOp::kSum);
    EXPECT_LE((t.to(torch::kDouble) - expected).abs().max().item<double>(), 1e-5);
    // Every rank holds the very same bits.
    torch::Tensor gathered = comm->AllGather(t.view({1, -1}));
    for (int r = 1; r < comm->size(); ++r) EXPECT_TRUE(gathered[r].equal(gathered[0]));
  }
}

TEST(CollectivesTest, NonContiguousTensorInPlace) {
  auto comms = Comms();
  torch::Tensor base = Input(comms[0]->rank(), 60, torch::kFloat).view({6, 10});
  torch::Tensor t = base.t();  // (10, 6), not contiguous
  comms[0]->AllReduce(t, ReduceOp::kSum);
  torch::Tensor expected = torch::zeros({6, 10});
  for (int r = 0; r < comms[0]->size(); ++r) expected += Input(r, 60, torch::kFloat).view({6, 10});
  EXPECT_TRUE(base.equal(expected));
}

TEST(CollectivesTest, BroadcastFromEveryRoot) {
  auto comms = Comms();
  for (size_t c = 0; c < comms.size(); ++c) {
    auto& comm = comms[c];
    for (int root = 0; root < comm->size(); ++root) {
      for (int64_t n : kSizes) {
        if (Skip(c, n)) continue;
        for (auto dtype : {torch::kFloat, torch::kLong, torch::kByte, torch::kHalf}) {
          torch::Tensor t = Input(comm->rank(), n, dtype);
          comm->Broadcast(t, root);
          ASSERT_TRUE(t.equal(Input(root, n, dtype))) << "root " << root << " n " << n;
        }
      }
    }
  }
}

TEST(CollectivesTest, AllGatherAndAllGatherV) {
  auto comms = Comms();
  for (auto& comm : comms) {
    for (auto dtype : {torch::kFloat, torch::kDouble, torch::kInt, torch::kBool}) {
      for (int64_t rows : {1, 5, 3000}) {
        torch::Tensor t = Input(comm->rank(), rows * 7, dtype).view({rows, 7});
        torch::Tensor g = comm->AllGather(t);
        std::vector<torch::Tensor> parts;
        for (int r = 0; r < comm->size(); ++r)
          parts.push_back(Input(r, rows * 7, dtype).view({rows, 7}));
        ASSERT_TRUE(g.equal(torch::cat(parts))) << "all_gather rows " << rows;
      }
      // Uneven: rank r has r * 1001 rows (rank 0 none).
      auto rows_of = [](int r) { return static_cast<int64_t>(r) * 1001; };
      torch::Tensor t = Input(comm->rank(), rows_of(comm->rank()) * 3, dtype).view({-1, 3});
      std::vector<int64_t> sizes;
      torch::Tensor g = comm->AllGatherV(t, &sizes);
      std::vector<torch::Tensor> parts;
      for (int r = 0; r < comm->size(); ++r) {
        parts.push_back(Input(r, rows_of(r) * 3, dtype).view({-1, 3}));
        EXPECT_EQ(sizes[r], rows_of(r));
      }
      ASSERT_TRUE(g.equal(torch::cat(parts))) << "all_gather_v " << dtype;
    }
    comm->Barrier();
  }
}

TEST(CollectivesTest, JobCommunicatorFromConfig) {
  reid::proto::DistConfig config;
  config.set_timeout_s(60);
  const Ranks ranks = InitRanks();  // already initialised by main: returns its result
  auto comm = MakeCommunicator(ranks, config);
  ASSERT_EQ(comm->size(), ranks.world_size);
  EXPECT_STREQ(comm->host().backend(), "mpi");
  torch::Tensor t = torch::ones({3}) * (comm->rank() + 1);
  comm->AllReduce(t, ReduceOp::kAvg);
  EXPECT_TRUE(t.equal(torch::full({3}, (comm->size() + 1) / 2.0)));
}

}  // namespace
}  // namespace reid::dist
