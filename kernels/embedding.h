// Token embedding: a row gather, and its scatter-add backward.
//   tokens [n] (each in [0, vocab)), table [vocab, d], out [n, d]
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

// Throws naming the position and value if a token is outside [0, vocab).
template <typename T>
void embedding_forward(const int32_t* tokens, const T* table, T* out, int64_t n, int64_t vocab,
                       int64_t d);

// dtable[tokens[i]] += dout[i] (rows repeated in tokens accumulate).
template <typename T>
void embedding_backward(const int32_t* tokens, const T* dout, T* dtable, int64_t n, int64_t vocab,
                        int64_t d);

// ---- CUDA ----
// tokens int32 [n] on the device; table bf16 (the compute copy), out bf16; dtable fp32 (+=).
// Tokens are NOT validated on the GPU (that would need a synchronisation); validate them on the
// host before the upload. The kernels never read or write outside the table: an out-of-range
// token's output row is NaN (so the loss turns NaN and the step is refused), and backward skips
// it.
void embedding_forward_cuda(const int32_t* tokens, const bf16* table, bf16* out, int64_t n,
                            int64_t vocab, int64_t d, cudaStream_t stream);
// Deterministic (bitwise reproducible) without atomics: a stable radix sort of the tokens groups
// the positions of each distinct token, in position order, and one block per distinct token sums
// its rows in fp32 in that order and adds the sum into dtable once. Scratch: about 16 n bytes
// plus cub's sort workspace.
void embedding_backward_cuda(const int32_t* tokens, const bf16* dout, float* dtable, int64_t n,
                             int64_t vocab, int64_t d, cudaStream_t stream);

}  // namespace sambay
