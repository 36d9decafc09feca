// SiLU and SwiGLU.
// Gradients are added into the given buffers.
#pragma once

#include <cstdint>

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

}  // namespace sambay
