// SiLU and SwiGLU on the GPU: elementwise, bf16 in and out, fp32 arithmetic, 16-byte accesses.
// Bytes per element: silu fwd 4, bwd 8; swiglu fwd 6 (per output), bwd 12. Memory-bound.
#include "kernels/activations.h"

#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;

template <int W>
__global__ void silu_forward_kernel(const bf16_t* x, bf16_t* y, int64_t packs) {
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    float v[W];
    cuda::load_bf16<W>(x + p * W, v);
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = cuda::silu(v[k]);
    cuda::store_bf16<W>(y + p * W, v);
  }
}

template <int W>
__global__ void silu_backward_kernel(const bf16_t* dy, const bf16_t* x, bf16_t* dx, int64_t packs) {
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    float g[W], v[W], acc[W];
    cuda::load_bf16<W>(dy + p * W, g);
    cuda::load_bf16<W>(x + p * W, v);
    cuda::load_bf16<W>(dx + p * W, acc);
#pragma unroll
    for (int k = 0; k < W; ++k) acc[k] += g[k] * cuda::silu_grad(v[k]);
    cuda::store_bf16<W>(dx + p * W, acc);
  }
}

// h [rows, 2F] = [gate | value]; packs of W along F (W divides F).
template <int W>
__global__ void swiglu_forward_kernel(const bf16_t* h, bf16_t* out, int64_t rows, int64_t F) {
  const int64_t per_row = F / W, packs = rows * per_row;
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    const int64_t r = p / per_row, j = (p - r * per_row) * W;
    const bf16_t* gate = h + r * 2 * F + j;
    float g[W], u[W];
    cuda::load_bf16<W>(gate, g);
    cuda::load_bf16<W>(gate + F, u);
#pragma unroll
    for (int k = 0; k < W; ++k) u[k] *= cuda::silu(g[k]);
    cuda::store_bf16<W>(out + r * F + j, u);
  }
}

template <int W>
__global__ void swiglu_backward_kernel(const bf16_t* dout, const bf16_t* h, bf16_t* dh,
                                       int64_t rows, int64_t F) {
  const int64_t per_row = F / W, packs = rows * per_row;
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    const int64_t r = p / per_row, j = (p - r * per_row) * W;
    const int64_t gate_at = r * 2 * F + j;
    float d[W], g[W], u[W], dg[W], du[W];
    cuda::load_bf16<W>(dout + r * F + j, d);
    cuda::load_bf16<W>(h + gate_at, g);
    cuda::load_bf16<W>(h + gate_at + F, u);
    cuda::load_bf16<W>(dh + gate_at, dg);
    cuda::load_bf16<W>(dh + gate_at + F, du);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      dg[k] += d[k] * u[k] * cuda::silu_grad(g[k]);
      du[k] += d[k] * cuda::silu(g[k]);
    }
    cuda::store_bf16<W>(dh + gate_at, dg);
    cuda::store_bf16<W>(dh + gate_at + F, du);
  }
}

}  // namespace

void silu_forward_cuda(const bf16* x, bf16* y, int64_t n, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0, "silu: negative length " + std::to_string(n));
  cuda::launch_packs(n, cuda::aligned16(x) && cuda::aligned16(y), [&](auto w, unsigned grid, int threads) {
    constexpr int W = decltype(w)::value;
    silu_forward_kernel<W><<<grid, threads, 0, stream>>>(cuda::nv(x), cuda::nv(y), n / W);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

void silu_backward_cuda(const bf16* dy, const bf16* x, bf16* dx, int64_t n, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0, "silu: negative length " + std::to_string(n));
  const bool vector_ok = cuda::aligned16(dy) && cuda::aligned16(x) && cuda::aligned16(dx);
  cuda::launch_packs(n, vector_ok, [&](auto w, unsigned grid, int threads) {
    constexpr int W = decltype(w)::value;
    silu_backward_kernel<W><<<grid, threads, 0, stream>>>(cuda::nv(dy), cuda::nv(x), cuda::nv(dx),
                                                          n / W);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

void swiglu_forward_cuda(const bf16* h, bf16* out, int64_t rows, int64_t F, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && F >= 0, "swiglu: bad shape rows=" + std::to_string(rows) +
                                                 " F=" + std::to_string(F));
  // The vector path needs every pack inside one row: F % 8 == 0 (then rows * F % 8 == 0 too).
  const bool vector_ok = F % 8 == 0 && cuda::aligned16(h) && cuda::aligned16(out);
  cuda::launch_packs(rows * F, vector_ok, [&](auto w, unsigned grid, int threads) {
    constexpr int W = decltype(w)::value;
    swiglu_forward_kernel<W><<<grid, threads, 0, stream>>>(cuda::nv(h), cuda::nv(out), rows, F);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

void swiglu_backward_cuda(const bf16* dout, const bf16* h, bf16* dh, int64_t rows, int64_t F,
                          cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(rows >= 0 && F >= 0, "swiglu: bad shape rows=" + std::to_string(rows) +
                                                 " F=" + std::to_string(F));
  const bool vector_ok =
      F % 8 == 0 && cuda::aligned16(dout) && cuda::aligned16(h) && cuda::aligned16(dh);
  cuda::launch_packs(rows * F, vector_ok, [&](auto w, unsigned grid, int threads) {
    constexpr int W = decltype(w)::value;
    swiglu_backward_kernel<W>
        <<<grid, threads, 0, stream>>>(cuda::nv(dout), cuda::nv(h), cuda::nv(dh), rows, F);
    SAMBAY_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace sambay
