// Differential attention (docs/model.md, "Differential attention"): query heads 2i, 2i+1 form
// differential head i; key/value heads 2j, 2j+1 form pair j = i * G / H; the value is
// concat(v_2j, v_2j+1) of size 2h.
//   lambda = exp(<lq1, lk1>) - exp(<lq2, lk2>) + lambda_init
//   o_i = softmax(q1 k1^T * scale + mask) v - lambda * softmax(q2 k2^T * scale + mask) v
//   o_i = RMSNorm_{2h}(o_i) * norm_weight * (1 - lambda_init), split back into query slots 2i, 2i+1
// Shapes: q [B, L, H, h], k, v [B, Lk, G, h], out [B, L, H, h]; lq1, lk1, lq2, lk2 [h];
// norm_weight [2h]. H and G even. window, doc [B, Lk] and the query slice (Lk, q_offset) as in
// attention.h.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"
#include "kernels/attention.h"

#include <cstdint>

namespace sambay {

struct DiffAttentionShape {
  int64_t B, L, H, G, h;
  int64_t window;        // 0: full causal
  int64_t Lk = 0;        // keys/values per row; 0 means L
  int64_t q_offset = 0;  // absolute position of query 0 among the keys; q_offset + L <= Lk
};

// What forward keeps for backward, in buffers the caller allocates with the sizes below.
struct DiffAttentionSaved {
  double* lambda;  // [1]: the layer's lambda (kept in double whatever T is)
  void* a1;        // [B, L, H/2, 2h] first softmax map times v (T)
  void* a2;        // [B, L, H/2, 2h] second softmax map times v (T)
  void* lse1;      // [B, H/2, L] (T)
  void* lse2;      // [B, H/2, L] (T)
  void* rstd;      // [B, L, H/2] the head norm's 1/rms (T)
};

// Element counts of each saved buffer, in order a1, a2, lse1, lse2, rstd.
struct DiffAttentionSavedSizes {
  int64_t a1, a2, lse1, lse2, rstd;
};
DiffAttentionSavedSizes diff_attention_saved_sizes(const DiffAttentionShape& s);

template <typename T>
void diff_attention_forward(const T* q, const T* k, const T* v, const int32_t* doc, const T* lq1,
                            const T* lk1, const T* lq2, const T* lk2, T lambda_init,
                            const T* norm_weight, T* out, const DiffAttentionSaved& saved,
                            const DiffAttentionShape& s, T scale, T eps);

// Gradients are added into the given buffers; a null gradient pointer skips it.
template <typename T>
void diff_attention_backward(const T* dout, const T* q, const T* k, const T* v,
                             const int32_t* doc, const T* lq1, const T* lk1, const T* lq2,
                             const T* lk2, T lambda_init, const T* norm_weight,
                             const DiffAttentionSaved& saved, T* dq, T* dk, T* dv, T* dlq1,
                             T* dlk1, T* dlq2, T* dlk2, T* dnorm_weight,
                             const DiffAttentionShape& s, T scale);

// ---- CUDA (kernels/diff_attention.cu). All pointers are device memory. No query slices: Lk
// other than L and q_offset other than 0 are rejected. q, k, v, out, dout and dq, dk, dv are
// bf16; lq1, lk1, lq2, lk2, norm_weight and their gradients fp32. Gradients are added into
// (+=); a null pointer skips one. dq, dk, dv are computed in fp32 and rounded once per
// map: dv receives two rounded additions (both maps read the same v).
// Saved buffers (element counts from diff_attention_saved_sizes), all on the device:
//   lambda one double; a1, a2 fp32 (they are subtracted, so they are kept unrounded);
//   lse1, lse2, rstd fp32.
// The two maps are the attention kernels of attention.h run on strided views: query heads 2i
// (then 2i+1) of q over key heads 2j (then 2j+1) of k, with v read as [B, L, G/2, 2h]; nothing is
// gathered or copied. Tensor-core kernels for h = 64 and h = 128 (dv = 2h), the simple kernels
// otherwise. The backward takes a bf16 workspace of 2 B L H h elements (cudaMallocAsync).
void diff_attention_forward_cuda(const bf16* q, const bf16* k, const bf16* v, const int32_t* doc,
                                 const float* lq1, const float* lk1, const float* lq2,
                                 const float* lk2, float lambda_init, const float* norm_weight,
                                 bf16* out, const DiffAttentionSaved& saved,
                                 const DiffAttentionShape& s, float scale, float eps,
                                 cudaStream_t stream);
void diff_attention_backward_cuda(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                                  const int32_t* doc, const float* lq1, const float* lk1,
                                  const float* lq2, const float* lk2, float lambda_init,
                                  const float* norm_weight, const DiffAttentionSaved& saved,
                                  bf16* dq, bf16* dk, bf16* dv, float* dlq1, float* dlk1,
                                  float* dlq2, float* dlk2, float* dnorm_weight,
                                  const DiffAttentionShape& s, float scale, cudaStream_t stream);

}  // namespace sambay
