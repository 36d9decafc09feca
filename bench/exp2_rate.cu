// The exp2 throughput ceiling: every thread runs kChains independent exp2 chains (each step
// depends on the chain's previous one, so the compiler cannot drop or merge them, but the chains
// of a thread and the many warps of an SM keep the special-function units busy, not waiting on
// latency). One FMA per exp2 keeps the values in [-1, 0], far below the FMA pipe's rate.
#include <cuda_runtime.h>

#include "bench/bench.h"
#include "core/cuda_check.h"
#include "kernels/bf16_vec.cuh"

namespace sambay::bench {
namespace {

constexpr int kChains = 8, kIterations = 4096, kThreads = 256;

__global__ void __launch_bounds__(kThreads) exp2_rate_kernel(float* sink) {
  float v[kChains];
#pragma unroll
  for (int k = 0; k < kChains; ++k) v[k] = -0.1f * float((threadIdx.x + k) % 10);
  for (int i = 0; i < kIterations; ++i)
#pragma unroll
    for (int k = 0; k < kChains; ++k) v[k] = fmaf(cuda::exp2_approx(v[k]), -0.5f, 0.25f);
  float total = 0.f;
#pragma unroll
  for (int k = 0; k < kChains; ++k) total += v[k];
  sink[blockIdx.x * kThreads + threadIdx.x] = total;
}

}  // namespace

double measure_exp2_rate(const Context& ctx) {
  int device = 0, sms = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&device));
  SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks = 16 * sms;  // several full waves
  float* sink = nullptr;
  SAMBAY_CUDA_CHECK(cudaMalloc(&sink, sizeof(float) * size_t(blocks) * kThreads));
  const double ms = ctx.time_ms([&] {
    exp2_rate_kernel<<<blocks, kThreads, 0, ctx.stream>>>(sink);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
  SAMBAY_CUDA_CHECK(cudaFree(sink));
  return double(blocks) * kThreads * kIterations * kChains / (ms * 1e-3);
}

}  // namespace sambay::bench
