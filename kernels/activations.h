// SiLU and SwiGLU.
// Gradients are added into the given buffers.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

// y = x * sigmoid(x), elementwise over n values.
template <typename T>
void silu_forward(const T* x, T* y, int64_t n);
template <typename T>
void silu_backward(const T* dy, const T* x, T* dx, int64_t n);

// SwiGLU on the fused fc1 output. h [rows, 2F]: the gate g is h[:, :F], the value u is h[:, F:];
// out [rows, F] = u * silu(g).
template <typename T>
void swiglu_forward(const T* h, T* out, int64_t rows, int64_t F);
template <typename T>
void swiglu_backward(const T* dout, const T* h, T* dh, int64_t rows, int64_t F);

// ---- CUDA ----
// bf16 in and out, computed in fp32; gradients are added (dx += ..., rounded once). 16-byte
// accesses when every pointer is 16-byte aligned and n (F for SwiGLU) is a multiple of 8.
void silu_forward_cuda(const bf16* x, bf16* y, int64_t n, cudaStream_t stream);
void silu_backward_cuda(const bf16* dy, const bf16* x, bf16* dx, int64_t n, cudaStream_t stream);
void swiglu_forward_cuda(const bf16* h, bf16* out, int64_t rows, int64_t F, cudaStream_t stream);
void swiglu_backward_cuda(const bf16* dout, const bf16* h, bf16* dh, int64_t rows, int64_t F,
                          cudaStream_t stream);

}  // namespace sambay
