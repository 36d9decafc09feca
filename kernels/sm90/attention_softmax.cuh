// The online softmax of the Hopper attention forward, on a warpgroup's 64 x N score accumulator
// (wgmma layout, see wgmma.cuh): each thread holds two rows (16w + g and 16w + g + 8), each row
// spread over the 4 threads of a quad. Scores live in the exp2 domain: x = scale * log2(e) * s.
#pragma once

#include <cmath>

namespace sambay::sm90 {

__device__ __forceinline__ float exp2_approx(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

template <int N>  // key columns of the score tile
struct OnlineSoftmax {
  static constexpr int R = N / 2;  // accumulator registers per thread
  float row_max[2] = {-INFINITY, -INFINITY};  // running max of x per row
  float row_sum[2] = {0.f, 0.f};              // this thread's part of the running sum

  // s: raw scores with masked entries at -inf. Turns s into the unnormalised probabilities
  // exp2(x - max) and returns, per row, the factor by which the output accumulated so far must
  // be multiplied. A row that has seen no visible key yet keeps max -inf and probabilities 0.
  __device__ __forceinline__ void update(float (&s)[R], float scale_log2, float (&rescale)[2]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < N / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * i], s[4 * j + 2 * i + 1]));
      const float new_max = fmaxf(row_max[i], quad_max(mx) * scale_log2);
      const float base = new_max == -INFINITY ? 0.f : new_max;
      rescale[i] = exp2_approx(row_max[i] - base);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < N / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[4 * j + 2 * i + e];
          x = exp2_approx(fmaf(x, scale_log2, -base));
          sum += x;
        }
      }
      row_sum[i] = fmaf(row_sum[i], rescale[i], sum);
      row_max[i] = new_max;
    }
  }

  // After the last tile: per row, 1 / sum (0 for a row with no visible key) and the natural-log
  // log-sum-exp of the scaled scores.
  __device__ __forceinline__ void finish(float (&inv_sum)[2], float (&lse)[2]) const {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const float total = quad_sum(row_sum[i]);
      inv_sum[i] = total > 0.f ? 1.f / total : 0.f;
      lse[i] = total > 0.f ? (row_max[i] + __log2f(total)) * 0.6931471805599453f : -INFINITY;
    }
  }
};

// Multiplies the two rows of a 64 x N accumulator by per-row factors.
template <int R>
__device__ __forceinline__ void scale_rows(float (&acc)[R], const float (&f)[2]) {
#pragma unroll
  for (int j = 0; j < R / 4; ++j) {
    acc[4 * j] *= f[0], acc[4 * j + 1] *= f[0];
    acc[4 * j + 2] *= f[1], acc[4 * j + 3] *= f[1];
  }
}

// Two floats as a bf16 pair, the first in the low half.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// A 64 x N fp32 accumulator as the bf16 A operands of a product over its N columns: N / 16
// fragments of 4 registers (wgmma.cuh explains why no data moves between threads).
template <int N>
__device__ __forceinline__ void to_a_fragments(const float (&acc)[N / 2], uint32_t (&a)[N / 16][4]) {
#pragma unroll
  for (int k = 0; k < N / 16; ++k) {
    a[k][0] = pack_bf16x2(acc[8 * k + 0], acc[8 * k + 1]);
    a[k][1] = pack_bf16x2(acc[8 * k + 2], acc[8 * k + 3]);
    a[k][2] = pack_bf16x2(acc[8 * k + 4], acc[8 * k + 5]);
    a[k][3] = pack_bf16x2(acc[8 * k + 6], acc[8 * k + 7]);
  }
}

}  // namespace sambay::sm90
