// The small matrix products inside the fused CPU attention (cpu_kernels.cc): C = A B for one head,
// single-threaded (the caller parallelises over heads), with A read through any strides so that
// transposed operands need no copy.
#pragma once

#include <cstdint>

namespace reid::model {

// Element (i, k) of A is data[i * row_stride + k * col_stride].
struct StridedMatrix {
  const float* data;
  int64_t row_stride, col_stride;
};

// C (m x n) = A (m x k) B (k x n): B's and C's rows contiguous, ldb and ldc floats apart; n a
// multiple of 16 (callers pad B with zero columns). Each C element is a single running sum over k
// in order, with fused multiply-adds where the CPU has AVX2 and FMA (checked once), as OpenBLAS's
// kernels compute it.
void SmallGemm(const StridedMatrix& a, int64_t m, int64_t k, const float* b, int64_t ldb, int64_t n,
               float* c, int64_t ldc);

}  // namespace reid::model
