#include "core/cuda_check.h"
#include "kernels/scale.h"

#include <cuda_bf16.h>

namespace sambay {

// 8 bf16 (16 bytes) per thread when aligned; a scalar tail otherwise. Memory-bound: 4 bytes per
// element.
__global__ void scale_bf16_kernel(const __nv_bfloat16* x, float s, __nv_bfloat16* y, int64_t n) {
  const int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 8;
  if (i + 8 <= n && (reinterpret_cast<uintptr_t>(x + i) % 16 == 0) &&
      (reinterpret_cast<uintptr_t>(y + i) % 16 == 0)) {
    uint4 packed = *reinterpret_cast<const uint4*>(x + i);
    __nv_bfloat162* v = reinterpret_cast<__nv_bfloat162*>(&packed);
    for (int j = 0; j < 4; ++j) {
      float2 f = __bfloat1622float2(v[j]);
      v[j] = __floats2bfloat162_rn(s * f.x, s * f.y);
    }
    *reinterpret_cast<uint4*>(y + i) = packed;
  } else {
    for (int64_t j = i; j < n && j < i + 8; ++j) y[j] = __float2bfloat16(s * __bfloat162float(x[j]));
  }
}

void scale_forward_cuda(const bf16* x, float s, bf16* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = (n + threads * 8 - 1) / (threads * 8);
  scale_bf16_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), s, reinterpret_cast<__nv_bfloat16*>(y), n);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace sambay
