// Mamba-1 selective scan with its input-dependent step, D skip and z gate (docs/model.md,
// "Selective scan" and "Carried state"). For each batch row b and channel e, with state s
// (N values) starting at zero:
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
// x, dt, z, y, out, Bc, Cc and their gradients bf16; dt_bias, A_log, D and their gradients fp32;
// the carried states of `carry` fp32 [B, E, N] on the device. N must be 4, 8 or 16. Same
// semantics as the CPU op, computed in fp32 (dBc and dCc: their terms enter the sum over
// channels as tf32); activation gradients are added in fp32 and rounded once to bf16, parameter
// gradients and carry.dstate_in are added in fp32. Every sum runs in a
// fixed order (no atomics): the same inputs give the same bits.
//
// Chunk-parallel: each row is cut into chunks of kSelectiveScanChunk tokens (the last one may
// be shorter) that are scanned at once and joined through their carried states, the ScanCarry
// algebra above applied between chunks (design and cost in selective_scan.cu).
//
// The forward stores in `checkpoint` (fp32, selective_scan_checkpoint_floats of them) the state
// entering every chunk, [B, chunks, E, N], then every chunk's summed steps, [B, chunks, E]. The
// backward restarts each chunk from it, so it needs the checkpoint of a forward on the same
// inputs and state_in; nothing of size [B, L, E, N] is ever stored. y and out may each be null
// (not written); with both null the forward computes only the checkpoint and carry.state_out /
// carry.decay_out (the first pass of context parallelism).
inline constexpr int64_t kSelectiveScanChunk = 64;
inline int64_t selective_scan_chunks(const SelectiveScanShape& s) {
  return (s.L + kSelectiveScanChunk - 1) / kSelectiveScanChunk;
}
inline int64_t selective_scan_checkpoint_floats(const SelectiveScanShape& s) {
  return s.B * selective_scan_chunks(s) * s.E * (s.N + 1);
}

void selective_scan_forward_cuda(const bf16* x, const bf16* dt, const float* dt_bias,
                                 const float* A_log, const bf16* Bc, const bf16* Cc,
                                 const float* D, const bf16* z, const int32_t* doc, bf16* y,
                                 bf16* out, float* checkpoint, const SelectiveScanShape& s,
                                 cudaStream_t stream, const ScanCarry<float>& carry = {});

// The backward reads the state before token 0 from the checkpoint (the forward stored
// carry.state_in there), so it does not read carry.state_in; it reads carry.dstate_out and adds
// into carry.dstate_in. With every gradient pointer null it computes carry.dstate_in alone (a
// third of the work). y: the forward's y output for the same inputs, or null; given, dz uses it
// (as stored, bf16) instead of recomputing y in the backward's walk. dBc and dCc are summed over
// channels in parts of kSelectiveScanPartChannels, then over the parts; the per-channel
// parameter gradients per chunk, then over chunks and rows, through `workspace` (fp32,
// selective_scan_backward_workspace_floats of them, overwritten): the gradient arriving at every
// chunk's last state [B, chunks, E, N], the dBc|dCc partials [B, parts, L, 2N], the
// dA_log|dD|ddt_bias partials [B, chunks, E, N + 2].
inline constexpr int64_t kSelectiveScanPartChannels = 128;
inline int64_t selective_scan_parts(const SelectiveScanShape& s) {
  return (s.E + kSelectiveScanPartChannels - 1) / kSelectiveScanPartChannels;
}
inline int64_t selective_scan_backward_workspace_floats(const SelectiveScanShape& s) {
  const int64_t chunks = selective_scan_chunks(s);
  return s.B * chunks * s.E * s.N + s.B * selective_scan_parts(s) * s.L * 2 * s.N +
         s.B * chunks * s.E * (s.N + 2);
}

void selective_scan_backward_cuda(const bf16* dout, const bf16* dy_extra, const bf16* x,
                                  const bf16* dt, const float* dt_bias, const float* A_log,
                                  const bf16* Bc, const bf16* Cc, const float* D, const bf16* z,
                                  const bf16* y, const int32_t* doc, const float* checkpoint,
                                  bf16* dx, bf16* ddt, float* ddt_bias, float* dA_log, bf16* dBc,
                                  bf16* dCc, float* dD, bf16* dz, float* workspace,
                                  const SelectiveScanShape& s, cudaStream_t stream,
                                  const ScanCarry<float>& carry = {});

// Decay exponentials exp(delta A) the CUDA kernels evaluate in a forward or a backward, on the
// special-function or the FMA units (the benchmark sets them against the GPU's exp2 rate).
int64_t selective_scan_cuda_exp2_count(const SelectiveScanShape& s, bool backward);

}  // namespace sambay
