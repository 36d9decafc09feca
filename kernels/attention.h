// Causal softmax attention with grouped-query heads, in two masks: full causal (window 0) and
// sliding window (query t sees keys t-w+1 .. t). The same op serves the cross-decoder's
// cross-attention: its k and v are the ones layer 17 produced, passed in by the caller.
//   q [B, L, H, dk], k [B, L, G, dk], v [B, L, G, dv], out [B, L, H, dv]
//   Query head h reads key/value head h / (H / G); H must be a multiple of G.
//   lse [B, H, L]: each query row's log-sum-exp of scaled scores, saved for backward.
//   doc [B, L] or nullptr: a query sees only keys of its own document.
// Scores are scale * <q, k>; the L x L matrix is formed one query row at a time.
#pragma once

#include <cstdint>

namespace sambay {

struct AttentionShape {
  int64_t B, L;
  int64_t H, G;    // query heads, key/value heads
  int64_t dk, dv;  // head dims of q/k and of v (differential attention uses dv = 2 dk)
  int64_t window;  // 0: full causal; w > 0: the last w keys including the query's own
};

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* doc, T* out, T* lse,
                       const AttentionShape& s, T scale);

// Gradients are added into dq, dk, dv (several query layers may share one k/v).
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const int32_t* doc,
                        const T* out, const T* lse, T* dq, T* dk, T* dv, const AttentionShape& s,
                        T scale);

}  // namespace sambay
