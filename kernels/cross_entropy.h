// Cross-entropy through the tied output head, computed over vocabulary chunks so that the
// [n, V] logits never exist: logits[i, v] = logit_scale * <h[i], emb[v]>.
//   h [n, d] (the final norm's output), emb [V, d] (the embedding table), targets [n] with
//   target < 0 meaning "ignore this position"; lse [n] saved for backward (unused rows: 0).
//   chunk: vocabulary rows per GEMM; any chunk >= 1 gives the same result.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

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

// ---- CUDA ----
// h, emb bf16 (emb: the bf16 compute copy of the table); targets int32 on the device; lse fp32.
// Each vocabulary chunk's logits come from a cuBLASLt GEMM in fp32 ([n, chunk] fp32 scratch).
// Forward: one block per row folds the chunk into the row's running (max, sum of exp) in fp32;
// a final single-block kernel forms lse and adds the row losses in double, in a fixed order.
// Returns the loss sum and *valid_rows (copied back: this SYNCHRONISES the stream). Throws naming
// the first row whose target is >= V (checked on the device during the same pass).
double tied_cross_entropy_forward_cuda(const bf16* h, const bf16* emb, const int32_t* targets,
                                       float* lse, int64_t n, int64_t d, int64_t V,
                                       float logit_scale, int64_t chunk, int64_t* valid_rows,
                                       cudaStream_t stream);

// dh (bf16) += grad_scale * d(sum loss)/dh, demb (fp32) += grad_scale * d(sum loss)/demb.
// Per chunk: the logits are recomputed (fp32), turned in place into the bf16 gradient
// grad_scale * logit_scale * (softmax - onehot), and two GEMMs follow: dh_f32 += G E_chunk (into
// an fp32 [n, d] scratch, added into dh once at the end, so dh is rounded once) and
// demb_chunk += G^T h (fp32, beta = 1). Does not synchronise. Targets >= V are not re-checked
// (the forward throws on them). Null gradient pointers are skipped.
void tied_cross_entropy_backward_cuda(const bf16* h, const bf16* emb, const int32_t* targets,
                                      const float* lse, bf16* dh, float* demb, int64_t n,
                                      int64_t d, int64_t V, float logit_scale, int64_t chunk,
                                      float grad_scale, cudaStream_t stream);

}  // namespace sambay
