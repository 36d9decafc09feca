// Linear layer: y = x W^T + b, with W stored [out, in] (the Hugging Face / PyTorch layout).
//   x [n, in], W [out, in], b [out] or nullptr, y [n, out]
// Convention for every backward in kernels/: gradients are ADDED into the given buffers
// (dx += ..., dW += ...); the caller zeroes them. A null gradient pointer skips that gradient.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

template <typename T>
void linear_forward(const T* x, const T* weight, const T* bias, T* y, int64_t n, int64_t in,
                    int64_t out);

template <typename T>
void linear_backward(const T* dy, const T* x, const T* weight, T* dx, T* dweight, T* dbias,
                     int64_t n, int64_t in, int64_t out);

// ---- CUDA ----
// x, W, y bf16 (W is the bf16 compute copy of the weight), bias fp32 [out] or nullptr; the GEMMs
// accumulate in fp32 (kernels/gemm.h). The bias is added in the GEMM's epilogue.
void linear_forward_cuda(const bf16* x, const bf16* weight, const float* bias, bf16* y, int64_t n,
                         int64_t in, int64_t out, cudaStream_t stream);

// dx += dy W (bf16, the sum formed in fp32 and rounded once), dweight += dy^T x (fp32),
// dbias += column sums of dy (fp32, two-stage deterministic reduction). Null pointers skip.
void linear_backward_cuda(const bf16* dy, const bf16* x, const bf16* weight, bf16* dx,
                          float* dweight, float* dbias, int64_t n, int64_t in, int64_t out,
                          cudaStream_t stream);

}  // namespace sambay
