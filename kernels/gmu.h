// Gated Memory Unit, the elementwise part: the caller does the two projections.
//   GMU:  out = m * silu(g)                     with g = x W_1 (d -> E), then out W_2 (E -> d)
//   nGMU: out = RMSNorm_E(m * silu(g)) * weight (norm_weight [E], eps)
//   m [rows, E] is the memory (layer 16's pre-gate scan output), g [rows, E], out [rows, E].
//   norm_weight == nullptr selects the plain GMU; rstd [rows] is saved for nGMU (unused by GMU,
//   may be nullptr then).
// Gradients are added into the given buffers; a null gradient pointer skips it.
#pragma once

#include <cstdint>

namespace sambay {

template <typename T>
void gmu_forward(const T* m, const T* g, const T* norm_weight, T* out, T* rstd, int64_t rows,
                 int64_t E, T eps);

template <typename T>
void gmu_backward(const T* dout, const T* m, const T* g, const T* norm_weight, const T* rstd,
                  T* dm, T* dg, T* dnorm_weight, int64_t rows, int64_t E);

}  // namespace sambay
