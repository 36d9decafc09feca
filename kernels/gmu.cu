// GMU / nGMU elementwise part on the GPU. The gated value a = m * silu(g) stays in fp32.
// GMU: elementwise, bytes per element fwd 6, bwd 14 (dout, m, g read; dm, dg read and written).
// nGMU forward: one block per row, the row in registers, one block reduction (sum a^2).
// nGMU backward: a persistent grid whose blocks walk their rows: one block reduction per row
// (sum dout w a rstd), dm/dg added in place, dnorm_weight column sums in registers, then a
// fixed-order second pass over the [parts, E] partials (no atomics).
#include "kernels/gmu.h"

#include <algorithm>

#include "kernels/column_reduce.cuh"
#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;
using cuda::RowSlice;

template <int W>
__global__ void gmu_forward_kernel(const bf16_t* m, const bf16_t* g, bf16_t* out, int64_t packs) {
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    float mv[W], gv[W];
    cuda::load_bf16<W>(m + p * W, mv);
    cuda::load_bf16<W>(g + p * W, gv);
#pragma unroll
    for (int k = 0; k < W; ++k) mv[k] *= cuda::silu(gv[k]);
    cuda::store_bf16<W>(out + p * W, mv);
  }
}

// dm += dout silu(g), dg += dout m silu'(g); a null dm or dg is skipped.
template <int W>
__global__ void gmu_backward_kernel(const bf16_t* dout, const bf16_t* m, const bf16_t* g,
                                    bf16_t* dm, bf16_t* dg, int64_t packs) {
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    float d[W], mv[W], gv[W];
    cuda::load_bf16<W>(dout + p * W, d);
    cuda::load_bf16<W>(m + p * W, mv);
    cuda::load_bf16<W>(g + p * W, gv);
    if (dm) {
      float acc[W];
      cuda::load_bf16<W>(dm + p * W, acc);
#pragma unroll
      for (int k = 0; k < W; ++k) acc[k] += d[k] * cuda::silu(gv[k]);
      cuda::store_bf16<W>(dm + p * W, acc);
    }
    if (dg) {
      float acc[W];
      cuda::load_bf16<W>(dg + p * W, acc);
#pragma unroll
      for (int k = 0; k < W; ++k) acc[k] += d[k] * mv[k] * cuda::silu_grad(gv[k]);
      cuda::store_bf16<W>(dg + p * W, acc);
    }
  }
}

// nGMU forward: out = a rstd w with rstd = 1 / sqrt(mean(a^2) + eps).
template <int W, int K>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void ngmu_forward_kernel(
    const bf16_t* m, const bf16_t* g, const float* weight, bf16_t* out, float* rstd, int E,
    float eps) {
  const int64_t row = blockIdx.x;
  const int64_t offset = row * E;
  RowSlice<W, K> a, gv;
  a.load(m + offset, E);
  gv.load(g + offset, E);
  float sq = 0.0f;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) {  // unowned slots: m = 0, so a = 0
      a.v[i][k] *= cuda::silu(gv.v[i][k]);
      sq += a.v[i][k] * a.v[i][k];
    }
  const float rs = 1.0f / sqrtf(cuda::block_sum(sq) / E + eps);
  RowSlice<W, K> w;
  w.load(weight, E);
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int k = 0; k < W; ++k) a.v[i][k] = a.v[i][k] * rs * w.v[i][k];
  a.store(out + offset, E);
  if (threadIdx.x == 0) rstd[row] = rs;
}

// nGMU backward: with ahat = a rstd, da = rstd (w dout - ahat mean(w dout ahat)); then
// dm += da silu(g), dg += da m silu'(g), dweight += dout ahat.
template <int W, int K>
__global__ __launch_bounds__(cuda::kRowMaxThreads) void ngmu_backward_kernel(
    const bf16_t* dout, const bf16_t* m, const bf16_t* g, const float* weight, const float* rstd,
    bf16_t* dm, bf16_t* dg, float* partial_w, int64_t rows, int E) {
  RowSlice<W, K> w, dw;
  w.load(weight, E);
  dw.zero();
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t offset = row * E;
    RowSlice<W, K> d, mv, gv;
    d.load(dout + offset, E);
    mv.load(m + offset, E);
    gv.load(g + offset, E);
    const float rs = rstd[row];
    float proj = 0.0f;
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) {  // unowned slots are 0 throughout
        const float ahat = mv.v[i][k] * cuda::silu(gv.v[i][k]) * rs;
        dw.v[i][k] += d.v[i][k] * ahat;
        proj += d.v[i][k] * w.v[i][k] * ahat;
      }
    if (dm || dg) {
      const float proj_mean = cuda::block_sum(proj) / E;
      RowSlice<W, K> dm_out, dg_out;
#pragma unroll
      for (int i = 0; i < K; ++i)
#pragma unroll
        for (int k = 0; k < W; ++k) {
          const float s = cuda::sigmoid(gv.v[i][k]), x = gv.v[i][k];
          const float ahat = mv.v[i][k] * x * s * rs;
          const float da = rs * (d.v[i][k] * w.v[i][k] - ahat * proj_mean);
          dm_out.v[i][k] = da * x * s;
          dg_out.v[i][k] = da * mv.v[i][k] * s * (1.0f + x * (1.0f - s));
        }
      if (dm) dm_out.add_to(dm + offset, E);
      if (dg) dg_out.add_to(dg + offset, E);
    }
  }
  if (partial_w) dw.store(partial_w + blockIdx.x * int64_t(E), E);
}

}  // namespace

void gmu_forward_cuda(const bf16* m, const bf16* g, const float* norm_weight, bf16* out,
                      float* rstd, int64_t rows, int64_t E, float eps, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && rows < (int64_t(1) << 31) && E >= 1,
                        "gmu: bad shape rows=" + std::to_string(rows) + " E=" + std::to_string(E));
  if (rows == 0) return;
  const bool vector_ok = cuda::aligned16(m) && cuda::aligned16(g) && cuda::aligned16(out);
  if (!norm_weight) {
    cuda::launch_packs(rows * E, vector_ok, [&](auto w, unsigned grid, int threads) {
      constexpr int W = decltype(w)::value;
      gmu_forward_kernel<W><<<grid, threads, 0, stream>>>(cuda::nv(m), cuda::nv(g), cuda::nv(out),
                                                          rows * E / W);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  cuda::with_row_layout(E, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    ngmu_forward_kernel<L::W, L::kChunks><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        cuda::nv(m), cuda::nv(g), norm_weight, cuda::nv(out), rstd, static_cast<int>(E), eps);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

void gmu_backward_cuda(const bf16* dout, const bf16* m, const bf16* g, const float* norm_weight,
                       const float* rstd, bf16* dm, bf16* dg, float* dnorm_weight, int64_t rows,
                       int64_t E, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && E >= 1,
                        "gmu: bad shape rows=" + std::to_string(rows) + " E=" + std::to_string(E));
  if (!norm_weight) dnorm_weight = nullptr;
  if (rows == 0 || (!dm && !dg && !dnorm_weight)) return;
  const bool vector_ok = cuda::aligned16(dout) && cuda::aligned16(m) && cuda::aligned16(g) &&
                         (!dm || cuda::aligned16(dm)) && (!dg || cuda::aligned16(dg));
  if (!norm_weight) {
    cuda::launch_packs(rows * E, vector_ok, [&](auto w, unsigned grid, int threads) {
      constexpr int W = decltype(w)::value;
      gmu_backward_kernel<W><<<grid, threads, 0, stream>>>(
          cuda::nv(dout), cuda::nv(m), cuda::nv(g), dm ? cuda::nv(dm) : nullptr,
          dg ? cuda::nv(dg) : nullptr, rows * E / W);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  cuda::with_row_layout(E, vector_ok, [&](auto layout, int threads) {
    using L = decltype(layout);
    auto kernel = ngmu_backward_kernel<L::W, L::kChunks>;
    const int64_t parts = std::min(rows, cuda::resident_blocks(kernel, threads));
    cuda::DeviceScratch partials(dnorm_weight ? sizeof(float) * parts * E : 0, stream);
    kernel<<<static_cast<unsigned>(parts), threads, 0, stream>>>(
        cuda::nv(dout), cuda::nv(m), cuda::nv(g), norm_weight, rstd, dm ? cuda::nv(dm) : nullptr,
        dg ? cuda::nv(dg) : nullptr, dnorm_weight ? partials.as<float>() : nullptr, rows,
        static_cast<int>(E));
    SAMBAY_CUDA_CHECK_LAUNCH();
    if (dnorm_weight)
      cuda::add_partial_column_sums(partials.as<float>(), parts, E, dnorm_weight, stream);
  });
}

}  // namespace sambay
