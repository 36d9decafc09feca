// Linear layer on the GPU: three cuBLASLt GEMMs and a column sum.
// FLOPs: forward 2 n in out; backward 2 n in out for each of dx and dW.
#include "kernels/linear.h"

#include "kernels/column_reduce.cuh"
#include "kernels/cuda_util.cuh"
#include "kernels/gemm.h"

namespace sambay {

void linear_forward_cuda(const bf16* x, const bf16* weight, const float* bias, bf16* y, int64_t n,
                         int64_t in, int64_t out, cudaStream_t stream) {
  // y[n, out] = x[n, in] W[out, in]^T + b
  gemm_bf16_cuda(false, true, n, out, in, 1.0f, x, in, weight, in, 0.0f, y, out, bias, stream);
}

void linear_backward_cuda(const bf16* dy, const bf16* x, const bf16* weight, bf16* dx,
                          float* dweight, float* dbias, int64_t n, int64_t in, int64_t out,
                          cudaStream_t stream) {
  // dx[n, in] += dy[n, out] W[out, in]
  if (dx) gemm_bf16_cuda(false, false, n, in, out, 1.0f, dy, out, weight, in, 1.0f, dx, in,
                         nullptr, stream);
  // dW[out, in] += dy^T[out, n] x[n, in]
  if (dweight) gemm_bf16_cuda(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dweight, in,
                              nullptr, stream);
  if (dbias) cuda::add_column_sums(cuda::nv(dy), n, out, dbias, stream);
}

}  // namespace sambay
