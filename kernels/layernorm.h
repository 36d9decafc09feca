// LayerNorm over the last dimension, with weight and bias (the SambaY models' norm).
//   x [rows, d], weight [d], bias [d], y [rows, d]; mean [rows] and rstd [rows] are saved for
//   backward (rstd = 1 / sqrt(var + eps), biased variance).
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                       int64_t rows, int64_t d, T eps);

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* weight, const T* mean, const T* rstd,
                        T* dx, T* dweight, T* dbias, int64_t rows, int64_t d);

// ---- CUDA ----
// x, y, dy, dx bf16; weight, bias fp32 [d]; mean, rstd fp32 [rows]; dweight, dbias fp32 [d].
// Statistics are computed in fp32 with the same two passes (mean, then squared deviations) over
// the row held in registers. Rows up to d = 16384 (multiples of 8) or 8192 (other widths).
void layernorm_forward_cuda(const bf16* x, const float* weight, const float* bias, bf16* y,
                            float* mean, float* rstd, int64_t rows, int64_t d, float eps,
                            cudaStream_t stream);

// dx += (bf16, formed in fp32 and rounded once); dweight, dbias += (fp32; per-block partial
// sums over row ranges, then a second kernel adds the parts in a fixed order: no atomics, and
// bitwise reproducible). Null gradient pointers skip.
void layernorm_backward_cuda(const bf16* dy, const bf16* x, const float* weight, const float* mean,
                             const float* rstd, bf16* dx, float* dweight, float* dbias,
                             int64_t rows, int64_t d, cudaStream_t stream);

// The residual stream's update fused with the next norm, in one pass:
//   x_out = x + scale * delta   (bf16, rounded once),   y = LayerNorm(x_out)
// The statistics and y use the rounded x_out, exactly as layernorm_forward_cuda(x_out) would,
// so layernorm_backward_cuda(x = x_out) is its backward. x_out may alias x (an in-place update).
void layernorm_residual_forward_cuda(const bf16* x, const bf16* delta, float scale, bf16* x_out,
                                     const float* weight, const float* bias, bf16* y,
                                     float* mean, float* rstd, int64_t rows, int64_t d,
                                     float eps, cudaStream_t stream);

}  // namespace sambay
