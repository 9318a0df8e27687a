// A register-blocked product (6 rows x 16 columns of C in 12 vector accumulators, the k loop
// innermost) in GCC/Clang vector extensions, compiled twice: for AVX2 + FMA and for the baseline.
#include "trainer/model/cpu_gemm.h"

#include <cstring>

#include "trainer/model/cpu_kernels_internal.h"

namespace reid::model {
namespace {

typedef float V8 __attribute__((vector_size(32)));

#define REID_INLINE inline __attribute__((always_inline))

REID_INLINE void Load(V8& v, const float* p) { std::memcpy(&v, p, sizeof v); }

// Rows [i0, i0 + MR) and columns [j0, j0 + 16) of C.
template <int MR>
REID_INLINE void Block(const StridedMatrix& a, int64_t i0, int64_t k, const float* b, int64_t ldb,
                       int64_t j0, float* c, int64_t ldc) {
  V8 acc[MR][2] = {};
  const float* arow = a.data + i0 * a.row_stride;
  for (int64_t p = 0; p < k; ++p) {
    V8 b0, b1;
    Load(b0, b + p * ldb + j0);
    Load(b1, b + p * ldb + j0 + 8);
    for (int r = 0; r < MR; ++r) {
      const float av = arow[r * a.row_stride + p * a.col_stride];
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    std::memcpy(c + (i0 + r) * ldc + j0, &acc[r][0], sizeof(V8));
    std::memcpy(c + (i0 + r) * ldc + j0 + 8, &acc[r][1], sizeof(V8));
  }
}

REID_INLINE void Gemm(const StridedMatrix& a, int64_t m, int64_t k, const float* b, int64_t ldb,
                      int64_t n, float* c, int64_t ldc) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {  // a 16-column panel of B stays in L1
    int64_t i0 = 0;
    for (; i0 + 6 <= m; i0 += 6) Block<6>(a, i0, k, b, ldb, j0, c, ldc);
    switch (m - i0) {
      case 5:
        Block<5>(a, i0, k, b, ldb, j0, c, ldc);
        break;
      case 4:
        Block<4>(a, i0, k, b, ldb, j0, c, ldc);
        break;
      case 3:
        Block<3>(a, i0, k, b, ldb, j0, c, ldc);
        break;
      case 2:
        Block<2>(a, i0, k, b, ldb, j0, c, ldc);
        break;
      case 1:
        Block<1>(a, i0, k, b, ldb, j0, c, ldc);
        break;
      default:
        break;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void GemmAvx2Fma(const StridedMatrix& a, int64_t m, int64_t k,
                                                     const float* b, int64_t ldb, int64_t n,
                                                     float* c, int64_t ldc) {
  Gemm(a, m, k, b, ldb, n, c, ldc);
}
#endif

void GemmBaseline(const StridedMatrix& a, int64_t m, int64_t k, const float* b, int64_t ldb,
                  int64_t n, float* c, int64_t ldc) {
  Gemm(a, m, k, b, ldb, n, c, ldc);
}

}  // namespace

void SmallGemm(const StridedMatrix& a, int64_t m, int64_t k, const float* b, int64_t ldb, int64_t n,
               float* c, int64_t ldc) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (internal::CpuHasAvx2Fma()) return GemmAvx2Fma(a, m, k, b, ldb, n, c, ldc);
#endif
  GemmBaseline(a, m, k, b, ldb, n, c, ldc);
}

}  // namespace reid::model
