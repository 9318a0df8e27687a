// Tensor collectives over the raw backends (see communicator.h).
#include "trainer/distributed/communicator.h"

#include <chrono>

#include "trainer/distributed/mpi_comm.h"
#ifdef REID_HAVE_NCCL
#include "trainer/distributed/nccl_comm.h"
#endif

namespace reid::dist {
namespace {

// The dtype a tensor travels as: its own when the backends know it, else a wider one.
torch::ScalarType WireType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
    case torch::kDouble:
    case torch::kInt:
    case torch::kLong:
    case torch::kByte:
    case torch::kHalf:
    case torch::kBFloat16:
      return t;
    default:
      return torch::kLong;  // bool, int8, int16
  }
}

DType ToDType(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return DType::kFloat32;
    case torch::kDouble:
      return DType::kFloat64;
    case torch::kInt:
      return DType::kInt32;
    case torch::kLong:
      return DType::kInt64;
    case torch::kByte:
      return DType::kUInt8;
    case torch::kHalf:
      return DType::kFloat16;
    case torch::kBFloat16:
      return DType::kBFloat16;
    default:
      LOG(FATAL) << "no wire dtype for " << t;
  }
}

// A contiguous tensor of the wire dtype sharing storage with `t` when possible.
torch::Tensor ToWire(const torch::Tensor& t) {
  return t.contiguous().to(WireType(t.scalar_type()));
}

}  // namespace

Communicator::Communicator(std::shared_ptr<RawComm> host, std::shared_ptr<RawComm> device)
    : host_(std::move(host)), device_(std::move(device)) {
  CHECK(host_) << "Communicator needs a host backend";
}

RawComm& Communicator::For(const torch::Tensor& t) {
  if (t.is_cuda()) {
    CHECK(device_) << "CUDA tensor given but this build/communicator has no NCCL backend";
    return *device_;
  }
  return *host_;
}

void Communicator::Await(const std::shared_ptr<Work>& work) {
  const auto start = std::chrono::steady_clock::now();
  work->Wait();
  wait_ns_ +=
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
}

void Communicator::AllReduce(torch::Tensor& t, ReduceOp op) {
  torch::Tensor wire = ToWire(t);
  if (op == ReduceOp::kAvg && !wire.is_floating_point()) {
    LOG(FATAL) << "all_reduce avg of a " << t.scalar_type() << " tensor; use sum";
  }
  Await(For(t).AllReduce(wire.data_ptr(), wire.numel(), ToDType(wire.scalar_type()), op));
  if (!wire.is_same(t)) t.copy_(wire);
}

std::shared_ptr<Work> Communicator::AllReduceAsync(const torch::Tensor& t, ReduceOp op) {
  CHECK(t.is_contiguous() && WireType(t.scalar_type()) == t.scalar_type())
      << "AllReduceAsync needs a contiguous tensor of an MPI-native dtype, got " << t.scalar_type();
  return For(t).AllReduce(t.data_ptr(), t.numel(), ToDType(t.scalar_type()), op);
}

void Communicator::Broadcast(torch::Tensor& t, int root) {
  torch::Tensor wire = ToWire(t);
  Await(For(t).Broadcast(wire.data_ptr(), wire.numel(), ToDType(wire.scalar_type()), root));
  if (!wire.is_same(t)) t.copy_(wire);
}

torch::Tensor Communicator::AllGather(const torch::Tensor& t) {
  CHECK_GE(t.dim(), 1) << "all_gather needs at least one dimension";
  torch::Tensor wire = ToWire(t);
  std::vector<int64_t> shape = t.sizes().vec();
  shape[0] *= size();
  torch::Tensor out = torch::empty(shape, wire.options());
  Await(
      For(t).AllGather(wire.data_ptr(), wire.numel(), out.data_ptr(), ToDType(wire.scalar_type())));
  return out.to(t.scalar_type());
}

torch::Tensor Communicator::AllGatherV(const torch::Tensor& t, std::vector<int64_t>* sizes) {
  CHECK_GE(t.dim(), 1) << "all_gather_v needs at least one dimension";
  torch::Tensor wire = ToWire(t);
  // Row counts first, on the host backend.
  torch::Tensor rows = torch::full({size()}, t.size(0), torch::kLong);
  torch::Tensor mine = torch::full({1}, t.size(0), torch::kLong);
  Await(host_->AllGather(mine.data_ptr(), 1, rows.data_ptr(), DType::kInt64));
  int64_t row_elems = 1;
  for (int64_t d = 1; d < t.dim(); ++d) row_elems *= t.size(d);
  std::vector<size_t> counts(size());
  std::vector<int64_t> row_counts(size());
  int64_t total_rows = 0;
  for (int r = 0; r < size(); ++r) {
    row_counts[r] = rows[r].item<int64_t>();
    counts[r] = static_cast<size_t>(row_counts[r] * row_elems);
    total_rows += row_counts[r];
  }
  std::vector<int64_t> shape = t.sizes().vec();
  shape[0] = total_rows;
  torch::Tensor out = torch::empty(shape, wire.options());
  Await(For(t).AllGatherV(wire.data_ptr(), out.data_ptr(), counts, ToDType(wire.scalar_type())));
  if (sizes != nullptr) *sizes = row_counts;
  return out.to(t.scalar_type());
}

void Communicator::Barrier() { Await(host_->Barrier()); }

Status CheckBackend(const reid::proto::DistConfig& config, int cuda_device) {
  if (config.backend() != reid::proto::DistConfig::NCCL) return Status::Ok();
#ifdef REID_HAVE_NCCL
  if (cuda_device >= 0) return Status::Ok();
  return Status::InvalidArgument(std::string("dist.backend = NCCL needs a CUDA device, but ") +
                                 (torch::cuda::is_available()
                                      ? "this run is on the CPU (--device=cpu)"
                                      : "no GPU is visible (or LibTorch has no CUDA)") +
                                 ": run on a GPU, or use AUTO or MPI");
#else
  (void)cuda_device;
  return Status::InvalidArgument(
      "dist.backend = NCCL but this build has no NCCL (the CUDA toolkit or NCCL was not found at "
      "build time; `reid version` says what is compiled in): use AUTO or MPI");
#endif
}

std::unique_ptr<Communicator> MakeCommunicator(const Ranks& ranks,
                                               const reid::proto::DistConfig& config,
                                               int cuda_device) {
  if (ranks.world_size == 1 && !ranks.mpi) {
    return std::make_unique<Communicator>(MakeLocalComm());
  }
  MpiCommOptions options;
  options.timeout_s = config.timeout_s();
  std::shared_ptr<RawComm> host = MakeMpiComm(MPI_COMM_WORLD, options);
  std::shared_ptr<RawComm> device;
#ifdef REID_HAVE_NCCL
  if (cuda_device >= 0 && config.backend() != reid::proto::DistConfig::MPI) {
    device = MakeNcclComm(*host, cuda_device);
  }
#else
  // An invariant: `reid train` refuses such a config first (CheckBackend, exit 2).
  CHECK(cuda_device < 0 || config.backend() != reid::proto::DistConfig::NCCL)
      << "dist.backend = NCCL in a build without NCCL: CheckBackend was not called";
#endif
  return std::make_unique<Communicator>(std::move(host), std::move(device));
}

}  // namespace reid::dist
