// Linear layer: y = x W^T + b, with W stored [out, in] (the Hugging Face / PyTorch layout).
//   x [n, in], W [out, in], b [out] or nullptr, y [n, out]
// Convention for every backward in kernels/: gradients are ADDED into the given buffers
// (dx += ..., dW += ...); the caller zeroes them. A null gradient pointer skips that gradient.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void linear_forward(const T* x, const T* weight, const T* bias, T* y, int64_t n, int64_t in,
                    int64_t out);

template <typename T>
void linear_backward(const T* dy, const T* x, const T* weight, T* dx, T* dweight, T* dbias,
                     int64_t n, int64_t in, int64_t out);

}  // namespace sambay
