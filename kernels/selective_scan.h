// Mamba-1 selective scan with its input-dependent step, D skip and z gate (model.md, Mamba
// steps 4-6). For each batch row b and channel e, with state s (N values) starting at zero:
//   delta_t = softplus(dt[t] + dt_bias),   A = -exp(A_log[e, :])
//   s_t = exp(delta_t * A) * s_{t-1} + delta_t * x_t * B_t
//   y_t = <s_t, C_t> + D * x_t,            out_t = y_t * silu(z_t)
// Shapes: x, dt, z, y, out [B, L, E]; dt_bias, D [E]; A_log [E, N]; Bc, Cc [B, L, N].
// y is the pre-gate output (SambaY's layer 16 hands it to the GMUs as the memory M).
// doc [B, L] or nullptr: the state resets to zero where the document id changes.
// The backward recomputes the states; nothing of size [B, L, E, N] is kept.
#pragma once

#include <cstdint>

namespace sambay {

struct SelectiveScanShape {
  int64_t B, L, E, N;
};

template <typename T>
void selective_scan_forward(const T* x, const T* dt, const T* dt_bias, const T* A_log,
                            const T* Bc, const T* Cc, const T* D, const T* z, const int32_t* doc,
                            T* y, T* out, const SelectiveScanShape& s);

// dout: gradient of out. dy_extra: gradient that reaches y from elsewhere (the GMUs reading the
// memory), or nullptr. Gradients are added into the given buffers; null pointers are skipped.
template <typename T>
void selective_scan_backward(const T* dout, const T* dy_extra, const T* x, const T* dt,
                             const T* dt_bias, const T* A_log, const T* Bc, const T* Cc,
                             const T* D, const T* z, const int32_t* doc, T* dx, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBc, T* dCc, T* dD, T* dz,
                             const SelectiveScanShape& s);

}  // namespace sambay
