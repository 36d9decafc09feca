// Mamba's causal depthwise convolution over time, channels last (as in_proj produces them).
//   x [B, L, C], weight [C, K], bias [C], y [B, L, C]:
//   y[b, t, c] = bias[c] + sum_{k < K} weight[c, k] * x[b, t - (K - 1) + k, c]
// Terms before t = 0 are zero. doc [B, L] gives each token's document id, or is nullptr (each
// row one document; a document is a maximal run of equal ids); the window never reaches a token
// of another document, so packed documents do not see each other. The SiLU that follows is a
// separate op on the CPU.
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void causal_conv1d_forward(const T* x, const T* weight, const T* bias, const int32_t* doc, T* y,
                           int64_t B, int64_t L, int64_t C, int64_t K);

template <typename T>
void causal_conv1d_backward(const T* dy, const T* x, const T* weight, const int32_t* doc, T* dx,
                            T* dweight, T* dbias, int64_t B, int64_t L, int64_t C, int64_t K);

}  // namespace sambay
