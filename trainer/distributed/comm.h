// The raw communicator interface: collectives on plain buffers (host memory for MPI, device memory
// for NCCL), asynchronous and executed in submission order. No LibTorch here; see communicator.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace reid::dist {

// kFloat16 (IEEE binary16) and kBFloat16 travel as 16-bit words; reductions of them accumulate in
// float32 and round once (to nearest even).
enum class DType { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kFloat16, kBFloat16 };
enum class ReduceOp { kSum, kAvg, kMax };

size_t DTypeSize(DType dtype);
bool IsFloating(DType dtype);
const char* DTypeName(DType dtype);
const char* ReduceOpName(ReduceOp op);

// A submitted collective. Wait() returns when the result may be used (MPI: data in the buffer;
// NCCL: the compute stream is ordered after it, see nccl_comm.h).
class Work {
 public:
  virtual ~Work() = default;
  virtual void Wait() = 0;
  virtual bool Done() = 0;
  // Seconds the collective itself ran (from start of execution to completion); 0 until done.
  virtual double seconds() const { return 0.0; }
};

// Collectives over every rank of one group. Calls must be made in the same order on every rank
// (collectives are matched by sequence). Buffers must stay valid and untouched until Wait().
class RawComm {
 public:
  virtual ~RawComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;

  // In place: buf (count) := reduction over ranks. kAvg only for floating types.
  virtual std::shared_ptr<Work> AllReduce(void* buf, size_t count, DType dtype, ReduceOp op) = 0;
  // buf (count) := root's buf.
  virtual std::shared_ptr<Work> Broadcast(void* buf, size_t count, DType dtype, int root) = 0;
  // recv (size * count) := concatenation of every rank's send (count), in rank order.
  virtual std::shared_ptr<Work> AllGather(const void* send, size_t count, void* recv,
                                          DType dtype) = 0;
  // recv (sum counts) := concatenation of rank r's send (counts[r]); counts known on every rank.
  virtual std::shared_ptr<Work> AllGatherV(const void* send, void* recv,
                                           const std::vector<size_t>& counts, DType dtype) = 0;
  virtual std::shared_ptr<Work> Barrier() = 0;
};

// 16-bit float conversions (round to nearest even; NaN stays NaN, overflow becomes infinity).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

// A finished Work (for world size 1 and empty buffers).
std::shared_ptr<Work> DoneWork();

// World size 1: every collective is a copy or nothing. Needs no MPI.
std::unique_ptr<RawComm> MakeLocalComm();

}  // namespace reid::dist
