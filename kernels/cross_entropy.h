// Cross-entropy through the tied output head, computed over vocabulary chunks so that the
// [n, V] logits never exist: logits[i, v] = logit_scale * <h[i], emb[v]>.
//   h [n, d] (the final norm's output), emb [V, d] (the embedding table), targets [n] with
//   target < 0 meaning "ignore this position"; lse [n] saved for backward (unused rows: 0).
//   chunk: vocabulary rows per GEMM; any chunk >= 1 gives the same result.
#pragma once

#include <cstdint>

namespace sambay {

// Returns the SUM over valid rows of -log softmax(logits[i])[targets[i]] (in double), and the
// number of valid rows in *valid_rows (skipped when null). Throws naming the row if a target is
// >= V.
template <typename T>
double tied_cross_entropy_forward(const T* h, const T* emb, const int32_t* targets, T* lse,
                                  int64_t n, int64_t d, int64_t V, T logit_scale, int64_t chunk,
                                  int64_t* valid_rows);

// Adds grad_scale * d(sum loss)/dh into dh and grad_scale * d(sum loss)/demb into demb
// (grad_scale = 1 / valid tokens of the whole batch gives the mean loss's gradient).
// Null gradient pointers are skipped.
template <typename T>
void tied_cross_entropy_backward(const T* h, const T* emb, const int32_t* targets, const T* lse,
                                 T* dh, T* demb, int64_t n, int64_t d, int64_t V, T logit_scale,
                                 int64_t chunk, T grad_scale);

}  // namespace sambay
