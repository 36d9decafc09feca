// Causal softmax attention with grouped-query heads, in two masks: full causal (window 0) and
// sliding window (query t sees keys t-w+1 .. t). The same op serves the cross-decoder's
// cross-attention: its k and v are the ones layer 17 produced, passed in by the caller.
//   q [B, L, H, dk], k [B, L, G, dk], v [B, L, G, dv], out [B, L, H, dv]
//   Query head h reads key/value head h / (H / G); H must be a multiple of G.
//   lse [B, H, L]: each query row's log-sum-exp of scaled scores, saved for backward.
//   doc [B, L] or nullptr: a query sees only keys of its own document.
// Scores are scale * <q, k>; the L x L matrix is formed one query row at a time.
//
// Context parallelism gives a rank a slice of the queries and all keys before them: with Lk
// keys and q_offset set, query t stands at position q_offset + t among the keys and sees key j
// iff j <= q_offset + t (and j > q_offset + t - window under a window) and, with doc, doc[b, j]
// == doc[b, q_offset + t]. Then k, v (and dk, dv) are [B, Lk, G, d] and doc [B, Lk] (the keys'
// ids; the queries' are the slice); q, out, dq, dout stay [B, L, H, d] and lse [B, H, L].
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"

#include <cstdint>

namespace sambay {

struct AttentionShape {
  int64_t B, L;
  int64_t H, G;    // query heads, key/value heads
  int64_t dk, dv;  // head dims of q/k and of v (differential attention uses dv = 2 dk)
  int64_t window;  // 0: full causal; w > 0: the last w keys including the query's own
  int64_t Lk = 0;        // keys/values per row; 0 means L
  int64_t q_offset = 0;  // absolute position of query 0 among the keys; q_offset + L <= Lk
};

// Keys (and values) per batch row.
inline int64_t attention_keys(const AttentionShape& s) { return s.Lk ? s.Lk : s.L; }

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const int32_t* doc, T* out, T* lse,
                       const AttentionShape& s, T scale);

// Gradients are added into dq, dk, dv (several query layers may share one k/v).
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const int32_t* doc,
                        const T* out, const T* lse, T* dq, T* dk, T* dv, const AttentionShape& s,
                        T scale);

// Throws (naming the value) unless s is a valid shape; the CUDA entry points call it first.
void check_attention_shape(const AttentionShape& s);

// ---- CUDA (kernels/attention.cu). All pointers are device memory; same layouts and masks as
// above, query slices (Lk, q_offset) included. q, k, v, out, dout bf16; lse [B, H, L] fp32.
// FlashAttention-style: tiles of queries and keys with an online softmax, nothing of size L x L
// in memory, key tiles outside the causal band or the window skipped (so cost grows with
// L * window). Doc masking is applied per element and does not skip tiles.
// Three implementations, chosen per call:
//   Hopper (kernels/sm90/: wgmma, TMA, warp-specialised; an sm_90 GPU) for (dk, dv) in
//     {(64, 64), (64, 128), (128, 128), (128, 256)};
//   mma.sync tensor-core kernels (any GPU from Ampere on) for those dims on other GPUs;
//   simple one-warp-per-row kernels, correct but slow, for any other head dims or unaligned
//     (not 16-byte) pointers or strides.
// Query slices need the Hopper kernels; elsewhere they are refused, naming why.
// Backward: dq, dk, dv are bf16 and ADDED into (computed in fp32, rounded once when written; a
// null pointer skips that gradient). dq goes through an fp32 buffer taken from the stream-ordered
// allocator (cudaMallocAsync) for the duration of the call; the first backward raises the default
// pool's release threshold so that this memory is not unmapped at every synchronisation.
void attention_forward_cuda(const bf16* q, const bf16* k, const bf16* v, const int32_t* doc,
                            bf16* out, float* lse, const AttentionShape& s, float scale,
                            cudaStream_t stream);
void attention_backward_cuda(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                             const int32_t* doc, const bf16* out, const float* lse, bf16* dq,
                             bf16* dk, bf16* dv, const AttentionShape& s, float scale,
                             cudaStream_t stream);

// Which implementation the CUDA entry points use: the automatic choice above, or one forced for
// every call (where it cannot serve a call, the next simpler one does). For tests, which hold each
// implementation to the reference, and for bisecting a suspected kernel bug.
enum class AttentionKernels { automatic, mma_sync, simple };
void attention_cuda_force_kernels(AttentionKernels kernels);

}  // namespace sambay
