// fp32 -> bf16 conversion on the GPU, with the same rounding as the host's to_bf16.
#include "core/bf16.h"
#include "core/cuda_check.h"
#include "core/cuda_runtime.h"

namespace sambay {

__global__ void convert_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = to_bf16(in[i]);
}

void convert_to_bf16_cuda(const float* in, bf16* out, int64_t n) {
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  convert_to_bf16_kernel<<<static_cast<unsigned>(blocks), threads>>>(in, out, n);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace sambay
