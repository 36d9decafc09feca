// Context parallelism: the L positions of every sample are cut into 2 CP chunks of
// h = L / (2 CP) positions, and CP rank r holds chunks r and 2 CP - 1 - r (the load-balanced
// "zigzag" assignment: under a causal mask a late chunk's queries see many keys and an early
// chunk's few, so each rank gets one of each and the ranks' attention work is equal). A rank's
// micro-batch [B, 2h] is thus 2B independent runs of h positions, [2B, h]: run 2b + s is chunk
// chunk_of(rank, s) of sample b. Most of the model is per position; these are the exchanges the
// rest needs (core/model.cpp uses them):
//   attention      keys, values and document ids gathered into whole samples, and the keys'
//                  and values' gradients reduce-scattered back to their chunks;
//   causal conv1d  the K - 1 positions before each chunk (its halo) from the chunk before it,
//                  and their gradient back;
//   selective scan the state carried into each chunk, folded from every earlier chunk's local
//                  final state and decay (kernels/selective_scan.h ScanCarry), and the matching
//                  fold of the state gradient from every later chunk.
// Arrays are [B, 2h, w] per rank (= [2B, h, w]) and [B, L, w] whole. MPI backend (host buffers).
#pragma once

#include "parallel/communicator.h"

#include <cstdint>

namespace sambay {

// The chunk (0 .. 2 cp - 1) that run s (0 or 1) of rank `rank` holds.
inline int64_t chunk_of(int rank, int s, int cp) { return s == 0 ? rank : 2 * cp - 1 - rank; }

// This rank's positions of a whole sample: tokens [B, L] -> local [B, 2h] (its two chunks).
template <typename T>
void take_context_chunks(const T* whole, T* local, int64_t B, int64_t L, int rank, int cp);

// local [B, 2h, w] of every rank -> whole [B, L, w].
template <typename T>
void gather_sequence(const Communicator& cp, const T* local, T* whole, int64_t B, int64_t h,
                     int64_t w);

// whole [B, L, w]: each rank's partial gradient of the whole samples; adds the sum over ranks
// of this rank's chunks into local [B, 2h, w].
template <typename T>
void reduce_scatter_sequence_add(const Communicator& cp, const T* whole, T* local, int64_t B,
                                 int64_t h, int64_t w);

// halo [2B, k, w]: for each run of local [2B, h, w], the last k positions of the chunk before it
// (zeros before chunk 0). k <= h.
template <typename T>
void previous_halo(const Communicator& cp, const T* local, T* halo, int64_t B, int64_t h,
                   int64_t w, int64_t k);

// The transpose: dhalo [2B, k, w] (the gradient of each run's halo) is added into the last k
// positions of the chunk before it, in dlocal [2B, h, w] of whichever rank holds that chunk.
template <typename T>
void return_halo_grad(const Communicator& cp, const T* dhalo, T* dlocal, int64_t B, int64_t h,
                      int64_t w, int64_t k);

// The scan state entering each of this rank's runs. state_out and decay [2B, S] are the runs
// scanned from a zero state (S = E N values); doc_whole [B, L] or null. The state entering
// chunk j is state_out(j-1) + decay(j-1) * (state entering j-1), zero for chunk 0 and where
// chunk j starts a new document.
template <typename T>
void carry_scan_state(const Communicator& cp, const T* state_out, const T* decay,
                      const int32_t* doc_whole, T* state_in, int64_t B, int64_t h, int64_t S);

// The backward fold: dstate_in_local [2B, S] is the gradient of each run's entering state from
// its own positions (a backward with no gradient arriving at its final state). Writes
// dstate_out [2B, S], the gradient arriving at each run's final state from all later chunks:
// dstate_out(j) = dstate_in(j+1), dstate_in(j) = dstate_in_local(j) + decay(j) * dstate_out(j),
// zero where chunk j + 1 starts a new document, and zero for the last chunk.
template <typename T>
void carry_scan_grad(const Communicator& cp, const T* dstate_in_local, const T* decay,
                     const int32_t* doc_whole, T* dstate_out, int64_t B, int64_t h, int64_t S);

}  // namespace sambay
