// LayerNorm over the last dimension, with weight and bias (the SambaY models' norm).
//   x [rows, d], weight [d], bias [d], y [rows, d]; mean [rows] and rstd [rows] are saved for
//   backward (rstd = 1 / sqrt(var + eps), biased variance).
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                       int64_t rows, int64_t d, T eps);

template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* weight, const T* mean, const T* rstd,
                        T* dx, T* dweight, T* dbias, int64_t rows, int64_t d);

}  // namespace sambay
