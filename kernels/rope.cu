// Rotary position embedding on the GPU (half-split layout, as kernels/rope.cpp).
// One block per (batch row, position) t: the cos/sin of the hd/2 angles t theta^(-2i/hd) are
// computed once per block in fp64 (angles reach L radians, where fp32 would lose ~1e-4) and
// kept in shared memory as fp32; then the block rotates the (i, i + hd/2) pairs of every head.
// Bytes: 4 heads hd per position (forward), 6 (backward, which adds into dx).
#include "kernels/rope.h"

#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;

constexpr int kThreads = 128;

// sign = +1: y = R(t) x; sign = -1: y (+)= R(t)^T x. Each pair is read before it is written by
// the same thread, so y may alias x.
template <bool kAccumulate>
__global__ void rope_kernel(const bf16_t* x, bf16_t* y, int64_t L, int heads, int hd,
                            double theta, float sign) {
  extern __shared__ float table[];  // cos [half], then sin [half]
  const int half = hd / 2;
  const int64_t row = blockIdx.x;  // b * L + t
  const double t = static_cast<double>(row % L);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double angle = t * pow(theta, -2.0 * i / hd);
    double s, c;
    sincos(angle, &s, &c);
    table[i] = static_cast<float>(c);
    table[half + i] = static_cast<float>(s);
  }
  __syncthreads();
  const bf16_t* xr = x + row * heads * hd;
  bf16_t* yr = y + row * heads * hd;
  for (int p = threadIdx.x; p < heads * half; p += blockDim.x) {
    const int h = p / half, i = p - h * half;
    const int at = h * hd + i;
    const float a = __bfloat162float(xr[at]), b = __bfloat162float(xr[at + half]);
    const float c = table[i], s = sign * table[half + i];
    float ya = a * c - b * s, yb = a * s + b * c;
    if constexpr (kAccumulate) {
      ya += __bfloat162float(yr[at]);
      yb += __bfloat162float(yr[at + half]);
    }
    yr[at] = __float2bfloat16_rn(ya);
    yr[at + half] = __float2bfloat16_rn(yb);
  }
}

template <bool kAccumulate>
void launch(const bf16* x, bf16* y, int64_t B, int64_t L, int64_t heads, int64_t hd, double theta,
            float sign, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(B >= 0 && L >= 0 && heads >= 1 && hd >= 2 && hd % 2 == 0 &&
                            heads * hd < (int64_t(1) << 30) && B * L < (int64_t(1) << 31),
                        "rope: bad shape B=" + std::to_string(B) + " L=" + std::to_string(L) +
                            " heads=" + std::to_string(heads) + " hd=" + std::to_string(hd));
  SAMBAY_CUDA_ARG_CHECK(theta > 0, "rope: theta " + std::to_string(theta) + " must be positive");
  if (B * L == 0) return;
  const size_t smem = sizeof(float) * hd;
  SAMBAY_CUDA_ARG_CHECK(smem <= 48 * 1024, "rope: head dim " + std::to_string(hd) + " too large");
  rope_kernel<kAccumulate><<<static_cast<unsigned>(B * L), kThreads, smem, stream>>>(
      cuda::nv(x), cuda::nv(y), L, static_cast<int>(heads), static_cast<int>(hd), theta, sign);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward_cuda(const bf16* x, bf16* y, int64_t B, int64_t L, int64_t heads, int64_t hd,
                       double theta, cudaStream_t stream) {
  launch<false>(x, y, B, L, heads, hd, theta, 1.0f, stream);
}

void rope_backward_cuda(const bf16* dy, bf16* dx, int64_t B, int64_t L, int64_t heads, int64_t hd,
                        double theta, cudaStream_t stream) {
  launch<true>(dy, dx, B, L, heads, hd, theta, -1.0f, stream);
}

}  // namespace sambay
