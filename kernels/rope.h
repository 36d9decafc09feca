// Rotary position embedding (Transformer++ baseline), in the half-split layout of GPT-NeoX and
// Llama: dimension i is paired with i + hd/2 and the pair at position t rotates by
// t * theta^(-2i/hd). Token t of each batch row stands at position position_offset + t: a rank
// holding a slice of the sequence (context parallelism) passes the slice's start.
//   x [B, L, heads, hd] (hd even), y [B, L, heads, hd]; y may alias x.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

template <typename T>
void rope_forward(const T* x, T* y, int64_t B, int64_t L, int64_t heads, int64_t hd, double theta,
                  int64_t position_offset = 0);

// dx += R(t)^T dy: the rotation's transpose.
template <typename T>
void rope_backward(const T* dy, T* dx, int64_t B, int64_t L, int64_t heads, int64_t hd,
                   double theta, int64_t position_offset = 0);

// ---- CUDA ----
// Positions 0..L-1 (no offset yet). bf16 in and out. One block per (batch row, position): the
// block's cos/sin table is computed in fp64 (as the CPU reference) into shared memory, then every
// head's pairs are rotated in fp32. y may alias x. Backward adds: dx += R(t)^T dy (rounded once).
void rope_forward_cuda(const bf16* x, bf16* y, int64_t B, int64_t L, int64_t heads, int64_t hd,
                       double theta, cudaStream_t stream);
void rope_backward_cuda(const bf16* dy, bf16* dx, int64_t B, int64_t L, int64_t heads, int64_t hd,
                        double theta, cudaStream_t stream);

}  // namespace sambay
