// Global gradient norm on the GPU (optim/clip.h).
// Norm: kPartials blocks, each summing the squares of one contiguous slice in double (16-byte
// loads when aligned), reduced in a fixed order to one partial per block; one block then adds the
// partials in a fixed order. Bytes: 4 per element read.
#include "optim/clip.h"

#include <cmath>

#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

constexpr int kThreads = 256;
constexpr int kPartials = 1024;  // fixed, so the summation order does not depend on the GPU

// Sum over the block in double, in a fixed order; the result is valid in thread 0.
__device__ double block_sum_double(double s) {
  __shared__ double warp_totals[32];
  s = cuda::warp_sum(s);
  if ((threadIdx.x & 31) == 0) warp_totals[threadIdx.x >> 5] = s;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) total += warp_totals[w];
  return total;
}

// Block b sums [b * per, (b + 1) * per) with per a multiple of 4, so that the float4 loads of an
// aligned buffer stay aligned.
__global__ void sum_squares_kernel(const float* g, int64_t n, bool vector_ok, double* partials) {
  const int64_t per = ((n + gridDim.x - 1) / gridDim.x + 3) / 4 * 4;
  const int64_t begin = blockIdx.x * per;
  const int64_t end = begin + per < n ? begin + per : n;
  double s = 0.0;
  int64_t scalar_begin = begin;
  if (vector_ok && end > begin) {
    const int64_t vector_end = begin + (end - begin) / 4 * 4;
    for (int64_t i = begin + 4 * int64_t(threadIdx.x); i < vector_end; i += 4 * int64_t(blockDim.x)) {
      const float4 q = *reinterpret_cast<const float4*>(g + i);
      s += double(q.x) * q.x + double(q.y) * q.y + double(q.z) * q.z + double(q.w) * q.w;
    }
    scalar_begin = vector_end;
  }
  for (int64_t i = scalar_begin + threadIdx.x; i < end; i += blockDim.x) s += double(g[i]) * g[i];
  const double total = block_sum_double(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void sum_partials_kernel(const double* partials, int count, double* out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  const double total = block_sum_double(s);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace

double global_grad_norm_cuda(const float* grads, int64_t n, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0, "gradient norm: negative length " + std::to_string(n));
  if (n == 0) return 0.0;
  cuda::DeviceScratch scratch(sizeof(double) * (kPartials + 1), stream);
  double* partials = scratch.as<double>();
  double* total = partials + kPartials;
  sum_squares_kernel<<<kPartials, kThreads, 0, stream>>>(grads, n, cuda::aligned16(grads),
                                                        partials);
  SAMBAY_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, 1024, 0, stream>>>(partials, kPartials, total);
  SAMBAY_CUDA_CHECK_LAUNCH();
  double host = 0.0;
  SAMBAY_CUDA_CHECK(cudaMemcpyAsync(&host, total, sizeof host, cudaMemcpyDeviceToHost, stream));
  SAMBAY_CUDA_CHECK(cudaStreamSynchronize(stream));
  return std::sqrt(host);
}

}  // namespace sambay
