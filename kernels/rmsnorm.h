// RMSNorm over the last dimension: y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).
// Used by Transformer++, nGMU and the differential-attention head norm.
//   x [rows, d], weight [d], y [rows, d], rstd [rows] saved for backward.
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>
#include <functional>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d, T eps);

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight,
                      int64_t rows, int64_t d);

// The same norm when each rank holds d of the d_full columns (tensor parallelism: the nGMU's
// norm over the inner width). sum_over_shards receives per-row partial sums [rows] (of x^2 in
// forward, of dy * weight * x in backward) and must replace them by their sum over the ranks.
using RowSumReducer = std::function<void(double* row_sums, int64_t rows)>;
template <typename T>
void rmsnorm_forward_sharded(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d,
                             int64_t d_full, T eps, const RowSumReducer& sum_over_shards);
template <typename T>
void rmsnorm_backward_sharded(const T* dy, const T* x, const T* weight, const T* rstd, T* dx,
                              T* dweight, int64_t rows, int64_t d, int64_t d_full,
                              const RowSumReducer& sum_over_shards);

// ---- CUDA ----
// x, y, dy, dx bf16; weight fp32 [d]; rstd fp32 [rows]; dweight fp32 [d]. Statistics in fp32
// over the row held in registers. Rows up to d = 16384 (multiples of 8) or 8192 (other widths).
void rmsnorm_forward_cuda(const bf16* x, const float* weight, bf16* y, float* rstd, int64_t rows,
                          int64_t d, float eps, cudaStream_t stream);

// dx += (bf16, formed in fp32 and rounded once); dweight += (fp32, per-block partial sums then
// a fixed-order second pass: no atomics, bitwise reproducible). Null gradient pointers skip.
void rmsnorm_backward_cuda(const bf16* dy, const bf16* x, const float* weight, const float* rstd,
                           bf16* dx, float* dweight, int64_t rows, int64_t d, cudaStream_t stream);

// x_out = x + scale * delta (bf16, rounded once), y = RMSNorm(x_out) in one pass; the statistics
// use the rounded x_out, so rmsnorm_backward_cuda(x = x_out) is its backward. x_out may alias x.
void rmsnorm_residual_forward_cuda(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                                   const float* weight, bf16* y, float* rstd, int64_t rows,
                                   int64_t d, float eps, cudaStream_t stream);

}  // namespace sambay
