// RMSNorm over the last dimension: y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).
// Used by Transformer++, nGMU and the differential-attention head norm.
//   x [rows, d], weight [d], y [rows, d], rstd [rows] saved for backward.
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d, T eps);

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight,
                      int64_t rows, int64_t d);

}  // namespace sambay
