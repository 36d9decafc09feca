// y = s * x elementwise: the gradient of a residual branch whose output was multiplied by s
// (muP++'s 1/sqrt(2 depth)). y may alias x.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"

#include <cstdint>

namespace sambay {

template <typename T>
void scale_forward(const T* x, T s, T* y, int64_t n);

// ---- CUDA ---- bf16 in and out, the product formed in fp32 and rounded once.
void scale_forward_cuda(const bf16* x, float s, bf16* y, int64_t n, cudaStream_t stream);

}  // namespace sambay
