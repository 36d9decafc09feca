// LayerNorm on the GPU (bf16 activations, fp32 statistics and parameters).
//
// Forward: one block per row; the row sits in registers (cuda::RowSlice, 16-byte accesses when
// aligned), so the two passes of the CPU reference (mean, then squared deviations) cost no
// extra memory traffic. Bytes: 2 d read + 2 d written per row (+ 4 d with the residual).
// FLOPs: about 8 d per row.
// Backward: a persistent grid (the blocks that fit at once), each block walking its rows: one fused block reduction per row for
// (sum g, sum g xhat), dx added in place, and the dweight/dbias column sums kept in registers
// over the block's rows. Each block then writes its partial sums ([parts, d] fp32), and a second
// kernel adds the parts in a fixed order. Bytes: 8 d per row (dy, x, dx read, dx written) plus
// the partials (2 parts d 4 B, written and read).
#include "kernels/layernorm.h"

#include <algorithm>

#include "kernels/column_reduce.cuh"
#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;
using cuda::RowSlice;

template <int W, int K, bool kResidual>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void layernorm_forward_kernel(
    const bf16_t* x, const bf16_t* delta, float scale, bf16_t* x_out, const float* weight,
    const float* bias, bf16_t* y, float* mean, float* rstd, int d, float eps) {
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
  // Unowned slots hold 0 and add nothing to the sum.
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) sum += v.v[i][k];
  const float mu = cuda::block_sum(sum) / d;
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < K; ++i)
    if (v.owned(i, d))
#pragma unroll
      for (int k = 0; k < W; ++k) sq += (v.v[i][k] - mu) * (v.v[i][k] - mu);
  const float rs = 1.0f / sqrtf(cuda::block_sum(sq) / d + eps);
  RowSlice<W, K> w, b;
  w.load(weight, d);
  b.load(bias, d);
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) v.v[i][k] = (v.v[i][k] - mu) * rs * w.v[i][k] + b.v[i][k];
  v.store(y + offset, d);
  if (threadIdx.x == 0) mean[row] = mu, rstd[row] = rs;
}

// With xhat = (x - mean) rstd and g = dy weight:
//   dx = rstd (g - mean(g) - xhat mean(g xhat)),  dweight = sum dy xhat,  dbias = sum dy.
template <int W, int K>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void layernorm_backward_kernel(
    const bf16_t* dy, const bf16_t* x, const float* weight, const float* mean, const float* rstd,
    bf16_t* dx, float* partial_w, float* partial_b, int64_t rows, int d) {
  RowSlice<W, K> w, dw, db;
  w.load(weight, d);
  dw.zero();
  db.zero();
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t offset = row * d;
    RowSlice<W, K> xhat, g;
    xhat.load(x + offset, d);
    g.load(dy + offset, d);
    const float mu = mean[row], rs = rstd[row];
    float g_sum = 0.0f, gx_sum = 0.0f;
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) {
        // Unowned slots: dy = 0 and weight = 0, so they add nothing anywhere.
        const float xh = (xhat.v[i][k] - mu) * rs, dyv = g.v[i][k];
        xhat.v[i][k] = xh;
        dw.v[i][k] += dyv * xh;
        db.v[i][k] += dyv;
        g.v[i][k] = dyv * w.v[i][k];
        g_sum += g.v[i][k];
        gx_sum += g.v[i][k] * xh;
      }
    if (dx) {
      const float2 sums = cuda::block_sum2(g_sum, gx_sum);
      const float g_mean = sums.x / d, gx_mean = sums.y / d;
#pragma unroll
      for (int i = 0; i < K; ++i)
#pragma unroll
        for (int k = 0; k < W; ++k) g.v[i][k] = rs * (g.v[i][k] - g_mean - xhat.v[i][k] * gx_mean);
      g.add_to(dx + offset, d);
    }
  }
  if (partial_w) dw.store(partial_w + blockIdx.x * int64_t(d), d);
  if (partial_b) db.store(partial_b + blockIdx.x * int64_t(d), d);
}

template <bool kResidual>
void launch_forward(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                    const float* weight, const float* bias, bf16* y, float* mean, float* rstd,
                    int64_t rows, int64_t d, float eps, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && rows < (int64_t(1) << 31) && d >= 1,
                        "layernorm: bad shape rows=" + std::to_string(rows) +
                            " d=" + std::to_string(d));
  if (rows == 0) return;
  bool vector_ok = cuda::aligned16(x) && cuda::aligned16(y);
  if (kResidual) vector_ok = vector_ok && cuda::aligned16(delta) && cuda::aligned16(x_out);
  cuda::with_row_layout(d, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    layernorm_forward_kernel<L::W, L::kChunks, kResidual>
        <<<static_cast<unsigned>(rows), threads, 0, stream>>>(
            cuda::nv(x), cuda::nv(delta), scale, cuda::nv(x_out), weight, bias, cuda::nv(y),
            mean, rstd, static_cast<int>(d), eps);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void layernorm_forward_cuda(const bf16* x, const float* weight, const float* bias, bf16* y,
                            float* mean, float* rstd, int64_t rows, int64_t d, float eps,
                            cudaStream_t stream) {
  launch_forward<false>(x, nullptr, 0.0f, nullptr, weight, bias, y, mean, rstd, rows, d, eps,
                        stream);
}

void layernorm_residual_forward_cuda(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                                     const float* weight, const float* bias, bf16* y,
                                     float* mean, float* rstd, int64_t rows, int64_t d,
                                     float eps, cudaStream_t stream) {
  launch_forward<true>(x, delta, scale, x_out, weight, bias, y, mean, rstd, rows, d, eps, stream);
}

void layernorm_backward_cuda(const bf16* dy, const bf16* x, const float* weight, const float* mean,
                             const float* rstd, bf16* dx, float* dweight, float* dbias,
                             int64_t rows, int64_t d, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && d >= 1, "layernorm_backward: bad shape rows=" +
                                                 std::to_string(rows) + " d=" + std::to_string(d));
  if (rows == 0 || (!dx && !dweight && !dbias)) return;
  const bool vector_ok = cuda::aligned16(dy) && cuda::aligned16(x) && (!dx || cuda::aligned16(dx));
  cuda::with_row_layout(d, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    auto kernel = layernorm_backward_kernel<L::W, L::kChunks>;
    const int64_t parts = std::min(rows, cuda::resident_blocks(kernel, threads));
    const int64_t sums = (dweight ? 1 : 0) + (dbias ? 1 : 0);
    cuda::DeviceScratch partials(sizeof(float) * parts * d * sums, stream);
    float* partial_w = dweight ? partials.as<float>() : nullptr;
    float* partial_b = dbias ? partials.as<float>() + (dweight ? parts * d : 0) : nullptr;
    kernel<<<static_cast<unsigned>(parts), threads, 0, stream>>>(
        cuda::nv(dy), cuda::nv(x), weight, mean, rstd, dx ? cuda::nv(dx) : nullptr, partial_w,
        partial_b, rows, static_cast<int>(d));
    SAMBAY_CUDA_CHECK_LAUNCH();
    if (dweight) cuda::add_partial_column_sums(partial_w, parts, d, dweight, stream);
    if (dbias) cuda::add_partial_column_sums(partial_b, parts, d, dbias, stream);
  });
}

}  // namespace sambay
