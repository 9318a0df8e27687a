// NCCL backend (see nccl_comm.h). All-gather-v is a group of broadcasts, one rooted at each rank.
#include "trainer/distributed/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <glog/logging.h>
#include <nccl.h>

namespace reid::dist {
namespace {

#define REID_CUDA_CHECK(expr)                                                 \
  do {                                                                        \
    cudaError_t err_ = (expr);                                                \
    CHECK_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

#define REID_NCCL_CHECK(expr)                                                 \
  do {                                                                        \
    ncclResult_t res_ = (expr);                                               \
    CHECK_EQ(res_, ncclSuccess) << #expr << ": " << ncclGetErrorString(res_); \
  } while (0)

ncclDataType_t ToNccl(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
      return ncclBfloat16;
#else
      LOG(FATAL) << "bfloat16 collectives need NCCL 2.10 or newer";
#endif
  }
  LOG(FATAL) << "unknown dtype";
}

ncclRedOp_t ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  LOG(FATAL) << "unknown op";
}

// Completion of one collective: an event recorded on the NCCL stream after it.
class NcclWork : public Work {
 public:
  NcclWork(cudaEvent_t done, cudaStream_t compute) : done_(done), compute_(compute) {}
  ~NcclWork() override { cudaEventDestroy(done_); }
  void Wait() override { REID_CUDA_CHECK(cudaStreamWaitEvent(compute_, done_, 0)); }
  bool Done() override { return cudaEventQuery(done_) == cudaSuccess; }

 private:
  cudaEvent_t done_;
  cudaStream_t compute_;
};

class NcclComm : public RawComm {
 public:
  NcclComm(RawComm& bootstrap, int device, cudaStream_t compute)
      : rank_(bootstrap.rank()), size_(bootstrap.size()), device_(device), compute_(compute) {
    REID_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (rank_ == 0) REID_NCCL_CHECK(ncclGetUniqueId(&id));
    bootstrap.Broadcast(&id, sizeof(id), DType::kUInt8, 0)->Wait();
    REID_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    REID_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    REID_CUDA_CHECK(cudaMalloc(&scratch_, sizeof(int32_t)));
    bootstrap.Barrier()->Wait();  // as Horovod: keeps ranks from racing into the first collective
  }

  ~NcclComm() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }

  std::shared_ptr<Work> AllReduce(void* buf, size_t count, DType dtype, ReduceOp op) override {
    if (count == 0) return DoneWork();
    AfterCompute();
    REID_NCCL_CHECK(ncclAllReduce(buf, buf, count, ToNccl(dtype), ToNccl(op), comm_, stream_));
    return Finished();
  }

  std::shared_ptr<Work> Broadcast(void* buf, size_t count, DType dtype, int root) override {
    CHECK(root >= 0 && root < size_) << "broadcast root " << root << " out of range";
    if (count == 0) return DoneWork();
    AfterCompute();
    REID_NCCL_CHECK(ncclBroadcast(buf, buf, count, ToNccl(dtype), root, comm_, stream_));
    return Finished();
  }

  std::shared_ptr<Work> AllGather(const void* send, size_t count, void* recv,
                                  DType dtype) override {
    if (count == 0) return DoneWork();
    AfterCompute();
    REID_NCCL_CHECK(ncclAllGather(send, recv, count, ToNccl(dtype), comm_, stream_));
    return Finished();
  }

  std::shared_ptr<Work> AllGatherV(const void* send, void* recv, const std::vector<size_t>& counts,
                                   DType dtype) override {
    CHECK_EQ(counts.size(), static_cast<size_t>(size_)) << "all_gather_v: one count per rank";
    AfterCompute();
    const size_t es = DTypeSize(dtype);
    char* out = static_cast<char*>(recv);
    size_t offset = 0;
    REID_NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < size_; ++r) {
      if (counts[r] > 0) {
        const void* src = r == rank_ ? send : out + offset * es;
        REID_NCCL_CHECK(
            ncclBroadcast(src, out + offset * es, counts[r], ToNccl(dtype), r, comm_, stream_));
      }
      offset += counts[r];
    }
    REID_NCCL_CHECK(ncclGroupEnd());
    return Finished();
  }

  std::shared_ptr<Work> Barrier() override {
    AfterCompute();
    REID_NCCL_CHECK(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_));
    REID_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return DoneWork();
  }

 private:
  // The NCCL stream waits for everything already queued on the compute stream.
  void AfterCompute() {
    REID_CUDA_CHECK(cudaSetDevice(device_));
    cudaEvent_t ready;
    REID_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    REID_CUDA_CHECK(cudaEventRecord(ready, compute_));
    REID_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    REID_CUDA_CHECK(cudaEventDestroy(ready));  // destruction is deferred until it completes
  }

  std::shared_ptr<Work> Finished() {
    cudaEvent_t done;
    REID_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    REID_CUDA_CHECK(cudaEventRecord(done, stream_));
    return std::make_shared<NcclWork>(done, compute_);
  }

  int rank_, size_, device_;
  cudaStream_t compute_;
  cudaStream_t stream_ = nullptr;
  ncclComm_t comm_ = nullptr;
  void* scratch_ = nullptr;
};

}  // namespace

std::unique_ptr<RawComm> MakeNcclComm(RawComm& bootstrap, int device, cudaStream_t compute) {
  return std::make_unique<NcclComm>(bootstrap, device, compute);
}

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

}  // namespace reid::dist
