// Row-major GEMM on the CPU through CBLAS (OpenBLAS), for float and double:
//   C[m, n] = alpha * op(A) * op(B) + beta * C
// op(A) is A[m, k] (lda >= k), or A[k, m] transposed when trans_a (lda >= m); likewise B.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

}  // namespace sambay
