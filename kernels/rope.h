// Rotary position embedding (Transformer++ baseline), in the half-split layout of GPT-NeoX and
// Llama: dimension i is paired with i + hd/2 and the pair at position t rotates by
// t * theta^(-2i/hd). Positions are 0..L-1 within each row of the batch.
//   x [B, L, heads, hd] (hd even), y [B, L, heads, hd]; y may alias x.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void rope_forward(const T* x, T* y, int64_t B, int64_t L, int64_t heads, int64_t hd, double theta);

// dx += R(t)^T dy: the rotation's transpose.
template <typename T>
void rope_backward(const T* dy, T* dx, int64_t B, int64_t L, int64_t heads, int64_t hd,
                   double theta);

}  // namespace sambay
