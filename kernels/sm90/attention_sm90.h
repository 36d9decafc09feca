// Hopper attention kernels (sm_90a: wgmma, TMA, warp specialisation), forward and backward, for
// the head dims the models use: (dk, dv) in {(64, 64), (64, 128), (128, 128), (128, 256)}.
// attention.cu routes attention_*_strided_cuda here on an sm_90 device; masks, layouts and
// results are those of attention.h (query slices included: Lk keys, q_offset).
// Tensors are described as HeadTensor views (tensor_map.h); the gradients dk, dv share k's and
// v's strides, dq q's, dout out's.
#pragma once

#include "core/cuda_stream.h"
#include "kernels/attention.h"
#include "kernels/sm90/tensor_map.h"

#include <cstdint>

namespace sambay::sm90 {

// Head dims with Hopper kernels (the backward covers the same).
bool attention_sm90_supports(int64_t dk, int64_t dv);
bool attention_sm90_backward_supports(int64_t dk, int64_t dv);

// out is bf16, or fp32 when out_f32; out[b, t, h, c] at b * L * o_pos + t * o_pos + h * o_head + c.
void attention_forward_sm90(const HeadTensor& q, const HeadTensor& k, const HeadTensor& v,
                            const int32_t* doc, void* out, bool out_f32, int64_t o_pos,
                            int64_t o_head, float* lse, const AttentionShape& s, float scale,
                            cudaStream_t stream);

// delta [B, H, L]: <dout, out> per row (computed by the caller). dq_acc: fp32 workspace of
// attention_sm90_dq_floats(s) elements, zeroed by the caller; the kernel adds dS K into it in
// its own tile order and attention_sm90_dq_finish adds scale * dq_acc into dq (bf16).
// dk, dv (bf16, may be null) are added into: k's and v's layouts.
int64_t attention_sm90_dq_floats(const AttentionShape& s);
void attention_backward_sm90(const HeadTensor& q, const HeadTensor& k, const HeadTensor& v,
                             const HeadTensor& dout, const int32_t* doc, const float* lse,
                             const float* delta, float* dq_acc, void* dk, void* dv,
                             const AttentionShape& s, float scale, cudaStream_t stream);
void attention_sm90_dq_finish(const float* dq_acc, void* dq, int64_t q_pos, int64_t q_head,
                              const AttentionShape& s, float scale, cudaStream_t stream);

}  // namespace sambay::sm90
