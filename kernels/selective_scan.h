// Mamba-1 selective scan with its input-dependent step, D skip and z gate (model.md, Mamba
// steps 4-6). For each batch row b and channel e, with state s (N values) starting at zero:
//   delta_t = softplus(dt[t] + dt_bias),   A = -exp(A_log[e, :])
//   s_t = exp(delta_t * A) * s_{t-1} + delta_t * x_t * B_t
//   y_t = <s_t, C_t> + D * x_t,            out_t = y_t * silu(z_t)
// Shapes: x, dt, z, y, out [B, L, E]; dt_bias, D [E]; A_log [E, N]; Bc, Cc [B, L, N].
// y is the pre-gate output (SambaY's layer 16 hands it to the GMUs as the memory M).
// doc [B, L] or nullptr: the state resets to zero where the document id changes.
// The backward recomputes the states; nothing of size [B, L, E, N] is kept.
//
// Context parallelism splits the sequence into chunks on different ranks; a ScanCarry links a
// chunk to its neighbours. s_t is linear in the state before the chunk, so
//   state_out = state_out(from a zero start) + decay_out * state_in   (elementwise, per [b, e, n])
// and the ranks can scan their chunks from zero at once, fold the carried states across ranks,
// and rerun with the true state_in. Likewise dstate_in = dstate_in(with zero dstate_out) +
// decay_out * dstate_out for the backward.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"

#include <cstdint>

namespace sambay {

struct SelectiveScanShape {
  int64_t B, L, E, N;
};

// State carried across a split of the sequence (context parallelism). All [B, E, N], T, or null.
template <typename T>
struct ScanCarry {
  const T* state_in = nullptr;    // forward: the state before token 0 (null: zero). The caller
                                  // zeroes rows whose token 0 starts a new document.
  T* state_out = nullptr;         // forward: written with the state after the last token
  T* decay_out = nullptr;         // forward: written with the factor by which state_in reaches
                                  // state_out: prod_t exp(delta_t * A), and 0 for a row in which
                                  // the state resets (document change at some t >= 1)
  const T* dstate_out = nullptr;  // backward: gradient arriving at state_out (null: zero)
  T* dstate_in = nullptr;         // backward: gradient of state_in, ADDED into
};

// With carry.state_in, s_{-1} = state_in: token 0 continues it (a document change between
// tokens t - 1 and t >= 1 still resets the state; token 0 never resets here).
template <typename T>
void selective_scan_forward(const T* x, const T* dt, const T* dt_bias, const T* A_log,
                            const T* Bc, const T* Cc, const T* D, const T* z, const int32_t* doc,
                            T* y, T* out, const SelectiveScanShape& s,
                            const ScanCarry<T>& carry = {});

// dout: gradient of out. dy_extra: gradient that reaches y from elsewhere (the GMUs reading the
// memory), or nullptr. Gradients are added into the given buffers; null pointers are skipped.
// carry: state_in as given to the forward; dstate_out and dstate_in as described above. The
// gradients include what flows through state_in (its decay into the states depends on dt,
// dt_bias and A_log). Every gradient pointer but carry.dstate_in may be null: a rank that folds
// the carried gradients across ranks first needs dstate_in alone.
template <typename T>
void selective_scan_backward(const T* dout, const T* dy_extra, const T* x, const T* dt,
                             const T* dt_bias, const T* A_log, const T* Bc, const T* Cc,
                             const T* D, const T* z, const int32_t* doc, T* dx, T* ddt,
                             T* ddt_bias, T* dA_log, T* dBc, T* dCc, T* dD, T* dz,
                             const SelectiveScanShape& s, const ScanCarry<T>& carry = {});

// ---- CUDA ----
// No carried state (ScanCarry) yet: every row starts from zero.
// x, dt, z, y, out, Bc, Cc and their gradients bf16; dt_bias, A_log, D and their gradients fp32.
// N must be 4, 8 or 16 (each thread keeps 4 states in registers, N/4 threads per channel).
// Same semantics as the CPU op, computed in fp32; activation gradients are added in fp32 and
// rounded once to bf16, parameter gradients are added in fp32. Results are deterministic.
//
// The forward walks the sequence in chunks of kSelectiveScanChunk tokens and saves the state
// after the last token of every chunk to `checkpoint`, fp32 laid out [B, chunks, E, N] (chunk
// outer so that a block's writes are contiguous), selective_scan_checkpoint_floats of them. The
// backward restarts each chunk from the previous chunk's checkpoint, so it needs the checkpoint
// of a forward on the same inputs; nothing of size [B, L, E, N] is ever stored. Pass a null
// checkpoint to the forward when no backward follows. y may be null (not written).
inline constexpr int64_t kSelectiveScanChunk = 32;
inline int64_t selective_scan_checkpoint_floats(const SelectiveScanShape& s) {
  return s.B * ((s.L + kSelectiveScanChunk - 1) / kSelectiveScanChunk) * s.E * s.N;
}

void selective_scan_forward_cuda(const bf16* x, const bf16* dt, const float* dt_bias,
                                 const float* A_log, const bf16* Bc, const bf16* Cc,
                                 const float* D, const bf16* z, const int32_t* doc, bf16* y,
                                 bf16* out, float* checkpoint, const SelectiveScanShape& s,
                                 cudaStream_t stream);

// The backward sums dBc and dCc over channels in three fixed-order stages (a warp, then the
// blocks of a thread-block cluster of kSelectiveScanClusterChannels channels through distributed
// shared memory, then the clusters), and the per-channel parameter gradients over the batch,
// through `workspace` (fp32, selective_scan_backward_workspace_floats of them, overwritten).
inline constexpr int64_t kSelectiveScanClusterChannels = 256;
inline int64_t selective_scan_backward_workspace_floats(const SelectiveScanShape& s) {
  const int64_t clusters =
      (s.E + kSelectiveScanClusterChannels - 1) / kSelectiveScanClusterChannels;
  return s.B * clusters * s.L * 2 * s.N + s.B * s.E * (s.N + 2);
}

void selective_scan_backward_cuda(const bf16* dout, const bf16* dy_extra, const bf16* x,
                                  const bf16* dt, const float* dt_bias, const float* A_log,
                                  const bf16* Bc, const bf16* Cc, const float* D, const bf16* z,
                                  const int32_t* doc, const float* checkpoint, bf16* dx,
                                  bf16* ddt, float* ddt_bias, float* dA_log, bf16* dBc, bf16* dCc,
                                  float* dD, bf16* dz, float* workspace,
                                  const SelectiveScanShape& s, cudaStream_t stream);

}  // namespace sambay
