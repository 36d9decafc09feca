// Row-major GEMM on the CPU through CBLAS (OpenBLAS), for float and double:
//   C[m, n] = alpha * op(A) * op(B) + beta * C
// op(A) is A[m, k] (lda >= k), or A[k, m] transposed when trans_a (lda >= m); likewise B.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

// cuBLASLt's handle type without its header (the same declaration as cublasLt.h's).
struct cublasLtContext;
typedef struct cublasLtContext* cublasLtHandle_t;

namespace sambay {

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

// ---- CUDA (cuBLASLt) ----
// The same row-major GEMM on bf16 operands with fp32 accumulation (pointers are device memory):
//   C[m, n] = alpha * op(A) op(B) + beta * C  (+ bias[j] added to every row when bias != nullptr)
// The bf16 overload rounds the fp32 result once when it writes C; the fp32 overload writes fp32
// (beta = 1 there is how weight gradients accumulate). bias is fp32 [n]. With beta = 0, C is not
// read (it may hold anything, NaN included). Any shape, leading dimension and pointer alignment
// is accepted (cuBLASLt's algorithm is chosen for the actual alignment; where its heuristic offers
// none, classic cuBLAS runs the product); aligned pointers and leading dimensions that are
// multiples of 8 get the fast kernels. Throws on bad arguments. The chosen algorithm is cached per
// shape and alignment, so repeated calls cost no search.
void gemm_bf16_cuda(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, bf16* c,
                    int64_t ldc, const float* bias, cudaStream_t stream);
void gemm_bf16_cuda(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, float* c,
                    int64_t ldc, const float* bias, cudaStream_t stream);

// The cuBLASLt handle and workspace of one device, created on first use and kept (never freed:
// the process's exit releases them, which avoids tearing down CUDA objects during static
// destruction).
// Thread safety: creating the per-device state and the algorithm cache are guarded by a mutex, so
// any thread may call gemm_bf16_cuda. The workspace is shared by every GEMM of the device (the
// cuBLAS fallback's too), so GEMMs must not RUN concurrently on different streams of one device:
// issue them all to one stream, or order the streams with events.
struct CublasLtDevice {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;  // 32 MiB
};
// The current device's state (cudaGetDevice).
const CublasLtDevice& cublaslt_device();

}  // namespace sambay
