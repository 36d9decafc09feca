// Context parallelism: the sequence of every batch row is cut into cp equal chunks, rank r of
// the CP group holding positions [r Lc, (r + 1) Lc) of each row (Lc = L / cp). Most of the
// model is per position; these are the exchanges the rest needs (core/model.cpp uses them):
//   attention      keys, values and document ids gathered into whole sequences, and the keys'
//                  and values' gradients reduce-scattered back to their chunks;
//   causal conv1d  the K - 1 positions before a chunk (its halo) from the previous rank, and
//                  their gradient back to it;
//   selective scan the state carried into each chunk, folded from every earlier rank's local
//                  final state and decay (kernels/selective_scan.h ScanCarry), and the matching
//                  fold of the state gradient from every later rank.
// Arrays are [B, Lc, w] per rank (w values per position) and [B, L, w] whole. The MPI backend
// (host buffers).
#pragma once

#include "parallel/communicator.h"

#include <cstdint>

namespace sambay {

// local [B, Lc, w] of every rank -> whole [B, cp Lc, w].
template <typename T>
void gather_sequence(const Communicator& cp, const T* local, T* whole, int64_t B, int64_t Lc,
                     int64_t w);

// whole [B, cp Lc, w]: each rank's partial gradient of the whole sequence; adds the sum over
// ranks of this rank's chunk into local [B, Lc, w].
template <typename T>
void reduce_scatter_sequence_add(const Communicator& cp, const T* whole, T* local, int64_t B,
                                 int64_t Lc, int64_t w);

// halo [B, k, w]: the previous rank's last k positions of local (zeros on rank 0). k <= Lc.
template <typename T>
void previous_halo(const Communicator& cp, const T* local, T* halo, int64_t B, int64_t Lc,
                   int64_t w, int64_t k);

// The transpose: dhalo [B, k, w] (the gradient of this rank's halo) is added into the previous
// rank's last k positions of dlocal [B, Lc, w], and the next rank's into this rank's.
template <typename T>
void return_halo_grad(const Communicator& cp, const T* dhalo, T* dlocal, int64_t B, int64_t Lc,
                      int64_t w, int64_t k);

// The scan state entering this rank's chunk. state_out and decay [B, S] are this rank's chunk
// scanned from a zero state (S = E N values per row); doc_whole [B, cp Lc] or null. Rank r's
// state_in = state_out(r-1) + decay(r-1) * state_in(r-1), zero for rank 0 and for a row whose
// chunk starts a new document.
template <typename T>
void carry_scan_state(const Communicator& cp, const T* state_out, const T* decay,
                      const int32_t* doc_whole, T* state_in, int64_t B, int64_t Lc, int64_t S);

// The backward fold: dstate_in_local [B, S] is the gradient of this rank's state_in from its
// own chunk (a backward with no gradient arriving at its state_out). Writes dstate_out [B, S],
// the gradient arriving at this rank's final state from all later chunks:
// dstate_out(r) = dstate_in(r+1), dstate_in(r) = dstate_in_local(r) + decay(r) * dstate_out(r),
// zero where chunk r + 1 starts a new document, and zero for the last rank.
template <typename T>
void carry_scan_grad(const Communicator& cp, const T* dstate_in_local, const T* decay,
                     const int32_t* doc_whole, T* dstate_out, int64_t B, int64_t Lc, int64_t S);

}  // namespace sambay
