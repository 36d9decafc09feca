// RMSNorm on the GPU (bf16 activations, fp32 statistics and parameters); the same structure as
// layernorm.cu. Forward: one block per row, the row in registers, one block reduction.
// Bytes: 2 d read + 2 d written per row (+ 4 d with the residual); FLOPs about 4 d per row.
// Backward: a persistent grid of blocks walking their rows, one block reduction per row, dweight
// column sums in registers then a fixed-order second pass over the [parts, d] partials.
// Bytes: 8 d per row (dy, x, dx read, dx written) plus the partials.
#include "kernels/rmsnorm.h"

#include <algorithm>

#include "kernels/column_reduce.cuh"
#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;
using cuda::RowSlice;

template <int W, int K, bool kResidual>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void rmsnorm_forward_kernel(
    const bf16_t* x, const bf16_t* delta, float scale, bf16_t* x_out, const float* weight,
    bf16_t* y, float* rstd, int d, float eps) {
  const int64_t row = blockIdx.x;
  const int64_t offset = row * d;
  RowSlice<W, K> v;
  v.load(x + offset, d);
  if constexpr (kResidual) {
    RowSlice<W, K> dv;
    dv.load(delta + offset, d);
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) v.v[i][k] = cuda::round_bf16(v.v[i][k] + scale * dv.v[i][k]);
    v.store(x_out + offset, d);
  }
  float sq = 0.0f;  // unowned slots hold 0
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) sq += v.v[i][k] * v.v[i][k];
  const float rs = 1.0f / sqrtf(cuda::block_sum(sq) / d + eps);
  RowSlice<W, K> w;
  w.load(weight, d);
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) v.v[i][k] = v.v[i][k] * rs * w.v[i][k];
  v.store(y + offset, d);
  if (threadIdx.x == 0) rstd[row] = rs;
}

// With g = dy weight: dx = rstd (g - x rstd mean(g x) rstd),  dweight = sum dy x rstd.
template <int W, int K>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void rmsnorm_backward_kernel(
    const bf16_t* dy, const bf16_t* x, const float* weight, const float* rstd, bf16_t* dx,
    float* partial_w, int64_t rows, int d) {
  RowSlice<W, K> w, dw;
  w.load(weight, d);
  dw.zero();
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t offset = row * d;
    RowSlice<W, K> xv, g;
    xv.load(x + offset, d);
    g.load(dy + offset, d);
    const float rs = rstd[row];
    float gx_sum = 0.0f;
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) {  // unowned slots are 0 throughout
        dw.v[i][k] += g.v[i][k] * xv.v[i][k] * rs;
        g.v[i][k] *= w.v[i][k];
        gx_sum += g.v[i][k] * xv.v[i][k];
      }
    if (dx) {
      const float gx_mean = cuda::block_sum(gx_sum) * rs / d;
#pragma unroll
      for (int i = 0; i < K; ++i)
#pragma unroll
        for (int k = 0; k < W; ++k) g.v[i][k] = rs * (g.v[i][k] - xv.v[i][k] * rs * gx_mean);
      g.add_to(dx + offset, d);
    }
  }
  if (partial_w) dw.store(partial_w + blockIdx.x * int64_t(d), d);
}

template <bool kResidual>
void launch_forward(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                    const float* weight, bf16* y, float* rstd, int64_t rows, int64_t d,
                    float eps, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && rows < (int64_t(1) << 31) && d >= 1,
                        "rmsnorm: bad shape rows=" + std::to_string(rows) +
                            " d=" + std::to_string(d));
  if (rows == 0) return;
  bool vector_ok = cuda::aligned16(x) && cuda::aligned16(y);
  if (kResidual) vector_ok = vector_ok && cuda::aligned16(delta) && cuda::aligned16(x_out);
  cuda::with_row_layout(d, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    rmsnorm_forward_kernel<L::W, L::kChunks, kResidual>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(
            cuda::nv(x), cuda::nv(delta), scale, cuda::nv(x_out), weight, cuda::nv(y), rstd,
            static_cast<int>(d), eps);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void rmsnorm_forward_cuda(const bf16* x, const float* weight, bf16* y, float* rstd, int64_t rows,
                          int64_t d, float eps, cudaStream_t stream) {
  launch_forward<false>(x, nullptr, 0.0f, nullptr, weight, y, rstd, rows, d, eps, stream);
}

void rmsnorm_residual_forward_cuda(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                                   const float* weight, bf16* y, float* rstd, int64_t rows,
                                   int64_t d, float eps, cudaStream_t stream) {
  launch_forward<true>(x, delta, scale, x_out, weight, y, rstd, rows, d, eps, stream);
}

void rmsnorm_backward_cuda(const bf16* dy, const bf16* x, const float* weight, const float* rstd,
                           bf16* dx, float* dweight, int64_t rows, int64_t d, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && d >= 1, "rmsnorm_backward: bad shape rows=" +
                                                 std::to_string(rows) + " d=" + std::to_string(d));
  if (rows == 0 || (!dx && !dweight)) return;
  const bool vector_ok = cuda::aligned16(dy) && cuda::aligned16(x) && (!dx || cuda::aligned16(dx));
  cuda::with_row_layout(d, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    auto kernel = rmsnorm_backward_kernel<L::W, L::kChunks>;
    const int64_t parts = std::min(rows, cuda::resident_blocks(kernel, threads));
    cuda::DeviceScratch partials(dweight ? sizeof(float) * parts * d : 0, stream);
    kernel<<<static_cast<unsigned>(parts), threads, 0, stream>>>(
        cuda::nv(dy), cuda::nv(x), weight, rstd, dx ? cuda::nv(dx) : nullptr,
        dweight ? partials.as<float>() : nullptr, rows, static_cast<int>(d));
    SAMBAY_CUDA_CHECK_LAUNCH();
    if (dweight) cuda::add_partial_column_sums(partials.as<float>(), parts, d, dweight, stream);
  });
}

}  // namespace sambay
