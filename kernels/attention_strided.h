// Strided views for the CUDA attention kernels. The public entry points in attention.h are these
// with contiguous [B, L, heads, d] strides; differential attention (diff_attention.cu) uses them to
// run "query heads 2i over key heads 2j" and "2i+1 over 2j+1" as two attentions reading the same
// q and k tensors, with no gather copies.
// Every tensor is addressed as base + b * L * pos + t * pos + head * head_stride + column.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"
#include "kernels/attention.h"

#include <cstdint>

namespace sambay {

struct AttentionStrides {
  int64_t q_pos, q_head;  // q and dq
  int64_t k_pos, k_head;  // k and dk
  int64_t v_pos, v_head;  // v and dv
  int64_t o_pos, o_head;  // out and dout
};

// Contiguous [B, L, heads, d] tensors.
AttentionStrides contiguous_attention_strides(const AttentionShape& s);

// out is bf16, or fp32 when out_f32 (differential attention keeps its two maps in fp32 because
// it subtracts them). lse [B, H, L] fp32 as in attention.h.
void attention_forward_strided_cuda(const bf16* q, const bf16* k, const bf16* v,
                                    const int32_t* doc, void* out, bool out_f32, float* lse,
                                    const AttentionShape& s, const AttentionStrides& st,
                                    float scale, cudaStream_t stream);

// dout has out's strides and is bf16; out is read (bf16 or fp32) only for D = <dout, out>.
void attention_backward_strided_cuda(const bf16* dout, const bf16* q, const bf16* k,
                                     const bf16* v, const int32_t* doc, const void* out,
                                     bool out_f32, const float* lse, bf16* dq, bf16* dk, bf16* dv,
                                     const AttentionShape& s, const AttentionStrides& st,
                                     float scale, cudaStream_t stream);

}  // namespace sambay
