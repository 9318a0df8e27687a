// Shared pieces of the raw communicator layer: dtype facts, finished work, the world-size-1 comm.
#include "trainer/distributed/comm.h"

#include <glog/logging.h>

#include <cmath>
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
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
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
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

bool IsFloating(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {  // inf / NaN
    bits = sign | 0x7F800000u | (mant << 13);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {  // zero
    bits = sign;
  } else {  // subnormal: mant * 2^-24, exact in float32
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t FloatToHalf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7FFFFFFFu;
  if (abs > 0x7F800000u) return sign | 0x7E00u;   // NaN (quiet)
  if (abs >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to infinity
  if (abs < 0x38800000u) {                        // below 2^-14: subnormal half or zero
    // Round |f| / 2^-24 to the nearest integer, ties to even (exact arithmetic in float32:
    // the scaled value is below 2^10 and has at most 24 significant bits).
    float scaled;
    uint32_t abs_bits = abs;
    std::memcpy(&scaled, &abs_bits, 4);
    scaled *= 16777216.0f;  // 2^24
    const float fl = std::floor(scaled);
    uint32_t m = static_cast<uint32_t>(fl);
    const float rest = scaled - fl;
    if (rest > 0.5f || (rest == 0.5f && (m & 1u))) ++m;
    return sign | static_cast<uint16_t>(m);  // m == 0x400 is the smallest normal: correct
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t dropped = abs & 0x1FFFu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (h & 1u))) ++h;  // may carry into exponent
  return sign | static_cast<uint16_t>(h);
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7FFFu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
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
