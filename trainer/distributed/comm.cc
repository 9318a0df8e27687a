// Shared pieces of the raw communicator layer: dtype facts, finished work, the world-size-1 comm.
#include "trainer/distributed/comm.h"

#include <glog/logging.h>

#include <cstring>

namespace reid::dist {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
  }
  LOG(FATAL) << "unknown dtype " << static_cast<int>(dtype);
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
  }
  return "?";
}

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

namespace {

class FinishedWork : public Work {
 public:
  void Wait() override {}
  bool Done() override { return true; }
};

class LocalComm : public RawComm {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  std::shared_ptr<Work> AllReduce(void*, size_t, DType dtype, ReduceOp op) override {
    CHECK(op != ReduceOp::kAvg || dtype == DType::kFloat32 || dtype == DType::kFloat64)
        << "all_reduce avg needs a floating dtype, got " << DTypeName(dtype);
    return DoneWork();
  }
  std::shared_ptr<Work> Broadcast(void*, size_t, DType, int root) override {
    CHECK_EQ(root, 0) << "broadcast root out of range for world size 1";
    return DoneWork();
  }
  std::shared_ptr<Work> AllGather(const void* send, size_t count, void* recv,
                                  DType dtype) override {
    if (count > 0 && send != recv) std::memmove(recv, send, count * DTypeSize(dtype));
    return DoneWork();
  }
  std::shared_ptr<Work> AllGatherV(const void* send, void* recv, const std::vector<size_t>& counts,
                                   DType dtype) override {
    CHECK_EQ(counts.size(), 1u) << "all_gather_v: one count per rank expected";
    return AllGather(send, counts[0], recv, dtype);
  }
  std::shared_ptr<Work> Barrier() override { return DoneWork(); }
};

}  // namespace

std::shared_ptr<Work> DoneWork() { return std::make_shared<FinishedWork>(); }

std::unique_ptr<RawComm> MakeLocalComm() { return std::make_unique<LocalComm>(); }

}  // namespace reid::dist
