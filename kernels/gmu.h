// Gated Memory Unit, the elementwise part: the caller does the two projections.
//   GMU:  out = m * silu(g)                     with g = x W_1 (d -> E), then out W_2 (E -> d)
//   nGMU: out = RMSNorm_E(m * silu(g)) * weight (norm_weight [E], eps)
//   m [rows, E] is the memory (layer 16's pre-gate scan output), g [rows, E], out [rows, E].
//   norm_weight == nullptr selects the plain GMU; rstd [rows] is saved for nGMU (unused by GMU,
//   may be nullptr then).
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

template <typename T>
void gmu_forward(const T* m, const T* g, const T* norm_weight, T* out, T* rstd, int64_t rows,
                 int64_t E, T eps);

template <typename T>
void gmu_backward(const T* dout, const T* m, const T* g, const T* norm_weight, const T* rstd,
                  T* dm, T* dg, T* dnorm_weight, int64_t rows, int64_t E);

// ---- CUDA ----
// m, g, out, dout, dm, dg bf16; norm_weight, dnorm_weight fp32 [E]; rstd fp32 [rows]. The gated
// value m * silu(g) is formed in fp32 and never rounded (as the CPU reference, which recomputes
// it). GMU: elementwise. nGMU: one block per row with the row in registers (forward), and a
// persistent grid with register column sums plus a fixed-order second pass for dnorm_weight
// (backward; no atomics). E up to 16384 (multiples of 8) or 8192 for the nGMU.
void gmu_forward_cuda(const bf16* m, const bf16* g, const float* norm_weight, bf16* out,
                      float* rstd, int64_t rows, int64_t E, float eps, cudaStream_t stream);
void gmu_backward_cuda(const bf16* dout, const bf16* m, const bf16* g, const float* norm_weight,
                       const float* rstd, bf16* dm, bf16* dg, float* dnorm_weight, int64_t rows,
                       int64_t E, cudaStream_t stream);

}  // namespace sambay
