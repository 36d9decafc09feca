// Mamba's causal depthwise convolution over time, channels last (as in_proj produces them).
//   x [B, L, C], weight [C, K], bias [C], y [B, L, C]:
//   y[b, t, c] = bias[c] + sum_{k < K} weight[c, k] * x[b, t - (K - 1) + k, c]
// Terms before t = 0 are zero. doc [B, L] gives each token's document id, or is nullptr (each
// row one document; a document is a maximal run of equal ids); the window never reaches a token
// of another document, so packed documents do not see each other. The SiLU that follows is a
// separate op on the CPU.
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"

#include <cstdint>

namespace sambay {

template <typename T>
void causal_conv1d_forward(const T* x, const T* weight, const T* bias, const int32_t* doc, T* y,
                           int64_t B, int64_t L, int64_t C, int64_t K);

template <typename T>
void causal_conv1d_backward(const T* dy, const T* x, const T* weight, const int32_t* doc, T* dx,
                            T* dweight, T* dbias, int64_t B, int64_t L, int64_t C, int64_t K);

// CUDA: the convolution fused with the SiLU that follows it, y = silu(conv(x)), for 1 <= K <= 4
// (Mamba uses 4).
// x, y, dy, dx bf16 [B, L, C]; weight [C, K], bias [C] and their gradients fp32.
// The pre-activation conv(x) is not stored: the backward recomputes it from x (K multiply-adds
// per element, while x has to be read for dweight anyway), so the backward also takes the bias.
// dy is the gradient of the SiLU output. dx (bf16) and dweight, dbias (fp32) are added into;
// a null gradient pointer skips it. dweight and dbias are summed without atomics: per-block
// partials go to `workspace` (fp32, causal_conv1d_silu_backward_workspace_floats of them,
// overwritten) and a second kernel adds them up in a fixed order, so results are deterministic.
void causal_conv1d_silu_forward_cuda(const bf16* x, const float* weight, const float* bias,
                                     const int32_t* doc, bf16* y, int64_t B, int64_t L, int64_t C,
                                     int64_t K, cudaStream_t stream);
// The backward's blocks each cover this many tokens of one row; one partial row per block.
inline constexpr int64_t kConvBackwardTokensPerBlock = 128;
inline int64_t causal_conv1d_silu_backward_workspace_floats(int64_t B, int64_t L, int64_t C,
                                                            int64_t K) {
  const int64_t blocks_per_row =
      (L + kConvBackwardTokensPerBlock - 1) / kConvBackwardTokensPerBlock;
  return B * blocks_per_row * C * (K + 1);
}
void causal_conv1d_silu_backward_cuda(const bf16* dy, const bf16* x, const float* weight,
                                      const float* bias, const int32_t* doc, bf16* dx,
                                      float* dweight, float* dbias, float* workspace, int64_t B,
                                      int64_t L, int64_t C, int64_t K, cudaStream_t stream);

}  // namespace sambay
