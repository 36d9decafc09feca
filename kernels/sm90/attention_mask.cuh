// Which (query, key) pairs an attention tile must compute, for the Hopper attention kernels.
// A query t (0 <= t < L) stands at absolute position q_offset + t among the Lk keys and sees key j
// iff j <= q_offset + t, j > q_offset + t - window (window > 0), and, with document ids, the key
// is in the query's document (attention.h states the contract).
//
// Tiles are rectangles of queries [t0, t0 + rows) and keys [j0, j0 + cols). The ranges below list
// the tiles that can hold a visible pair (others are skipped: the cost follows L * window under a
// window, and the causal triangle otherwise), and `full` tells the tiles whose every pair is
// visible, which skip the per-element mask.
#pragma once

#include <cstdint>

namespace sambay::sm90 {

struct AttentionMask {
  int L, Lk, q_offset, window;  // window 0: full causal
  const int32_t* doc;           // [Lk] ids of this batch row's keys, or null

  // Key tiles of `cols` keys that queries [t0, t0 + rows) can see: [first, end).
  __device__ __forceinline__ int first_key_tile(int t0, int cols) const {
    const int lo = window > 0 ? q_offset + t0 - window + 1 : 0;
    return lo > 0 ? lo / cols : 0;
  }
  __device__ __forceinline__ int end_key_tile(int t0, int rows, int cols) const {
    const int hi = min(Lk - 1, q_offset + min(t0 + rows, L) - 1);  // last key any query sees
    return hi / cols + 1;
  }
  // Query tiles of `rows` queries that keys [j0, j0 + cols) are seen by: [first, end).
  __device__ __forceinline__ int first_query_tile(int j0, int rows) const {
    const int lo = j0 - q_offset;  // the first query at or after the first key
    return lo > 0 ? lo / rows : 0;
  }
  __device__ __forceinline__ int end_query_tile(int j0, int cols, int rows) const {
    int hi = L - 1;
    if (window > 0) hi = min(hi, j0 + cols - 1 + window - 1 - q_offset);
    return hi < 0 ? 0 : hi / rows + 1;
  }

  // True when every query of [t0, t0 + rows) sees every key of [j0, j0 + cols), all in range.
  __device__ __forceinline__ bool full(int t0, int rows, int j0, int cols) const {
    if (doc != nullptr) return false;
    if (t0 + rows > L || j0 + cols > Lk) return false;
    if (j0 + cols - 1 > q_offset + t0) return false;                          // causal edge
    if (window > 0 && j0 <= q_offset + t0 + rows - 1 - window) return false;  // window edge
    return true;
  }

  // Whether query t (< L) and key j are in the causal band and the window, both in range.
  __device__ __forceinline__ bool in_band(int t, int j) const {
    const int pos = q_offset + t;
    return t < L && j < Lk && j <= pos && (window == 0 || j > pos - window);
  }
  // Document ids (0 without doc ids, so that every pair matches).
  __device__ __forceinline__ int32_t key_doc(int j) const {
    return doc != nullptr && j < Lk ? __ldg(doc + j) : 0;
  }
  __device__ __forceinline__ int32_t query_doc(int t) const {
    return doc != nullptr && t < L ? __ldg(doc + q_offset + t) : 0;
  }
};

}  // namespace sambay::sm90
