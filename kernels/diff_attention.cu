// Differential attention on the GPU: the two softmax maps are the attention kernels of
// attention.cu run on strided views (query heads 2i / 2i+1 over key heads 2j / 2j+1 of the same
// q and k, v read as [B, L, G/2, 2h]); small kernels compute lambda, the combination
// o = a1 - lambda a2 with the head RMSNorm, and their backward.
// Per row of 2h the combine kernels move ~ 2h * (4 + 4 + 2) bytes forward and twice that
// backward: memory-bound and small next to the attention.
#include "kernels/attention_strided.h"
#include "kernels/diff_attention.h"

#include "core/cuda_check.h"
#include "kernels/cuda_errors.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace sambay {
namespace {

using bf16_t = __nv_bfloat16;

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// <a, b> over h, in double, on every lane of the (single) warp.
__device__ double warp_dot(const float* a, const float* b, int h) {
  double acc = 0;
  for (int i = threadIdx.x; i < h; i += 32) acc += static_cast<double>(a[i]) * b[i];
  return warp_sum(acc);
}

// lambda = exp(<lq1, lk1>) - exp(<lq2, lk2>) + lambda_init. One warp.
__global__ void diff_lambda_kernel(const float* lq1, const float* lk1, const float* lq2,
                                   const float* lk2, int h, double lambda_init, double* lambda) {
  const double d1 = warp_dot(lq1, lk1, h), d2 = warp_dot(lq2, lk2, h);
  if (threadIdx.x == 0) *lambda = exp(d1) - exp(d2) + lambda_init;
}

// Per row of n = 2h: o = a1 - lambda a2, out = o * rstd * w * out_scale. One warp per row.
__global__ void diff_combine_kernel(const float* a1, const float* a2, const double* lambda,
                                    const float* w, float out_scale, float eps, bf16_t* out,
                                    float* rstd, int64_t rows, int n) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const float lam = static_cast<float>(*lambda);
  const float* x1 = a1 + row * n;
  const float* x2 = a2 + row * n;
  float sum_sq = 0.f;
  for (int c = lane; c < n; c += 32) {
    const float o = x1[c] - lam * x2[c];
    sum_sq += o * o;
  }
  const float rs = rsqrtf(warp_sum(sum_sq) / n + eps);
  for (int c = lane; c < n; c += 32)
    out[row * n + c] = __float2bfloat16_rn((x1[c] - lam * x2[c]) * rs * w[c] * out_scale);
  if (lane == 0) rstd[row] = rs;
}

// Backward of the combination and norm, per row (x^ = o rstd, y = c w x^):
//   g = c w dy, do = rstd (g - x^ mean(g x^)), da1 = do, da2 = -lambda do,
//   dlambda -= <do, a2>, dw += c dy x^.
// Warps stride over rows; each lane keeps its columns' dw sums (and dlambda) in registers. The
// block adds its warps' sums in warp order and writes one partial row [n + 1] (dw, then
// dlambda) to `partials`; diff_combine_reduce_kernel adds the blocks' rows in block order. No
// atomics: the gradients are the same bits on every run (recompute relies on it).
constexpr int kMaxCombineCols = 8;  // columns per lane: n = 2h <= 256

__global__ void diff_combine_backward_kernel(const bf16_t* dout, const float* a1, const float* a2,
                                             const float* rstd, const double* lambda,
                                             const float* w, float out_scale, bf16_t* da1,
                                             bf16_t* da2, float* partials, int64_t rows, int n) {
  extern __shared__ float warp_sums[];  // [warps][n + 1]
  const float lam = static_cast<float>(*lambda);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps_per_block = blockDim.x / 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * warps_per_block;
  float dw_acc[kMaxCombineCols] = {};
  float dl = 0.f;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps_per_block + warp; row < rows;
       row += warps) {
    const float rs = rstd[row];
    const float* x1 = a1 + row * n;
    const float* x2 = a2 + row * n;
    const bf16_t* dy = dout + row * n;
    float mean_gx = 0.f;
    for (int c = lane; c < n; c += 32) {
      const float xh = (x1[c] - lam * x2[c]) * rs;
      mean_gx += out_scale * w[c] * __bfloat162float(dy[c]) * xh;
    }
    mean_gx = warp_sum(mean_gx) / n;
#pragma unroll
    for (int j = 0; j < kMaxCombineCols; ++j) {
      const int c = lane + 32 * j;
      if (c >= n) break;
      const float xh = (x1[c] - lam * x2[c]) * rs;
      const float dyc = __bfloat162float(dy[c]);
      const float d_o = rs * (out_scale * w[c] * dyc - xh * mean_gx);
      da1[row * n + c] = __float2bfloat16_rn(d_o);
      da2[row * n + c] = __float2bfloat16_rn(-lam * d_o);
      dl -= d_o * x2[c];
      dw_acc[j] += out_scale * dyc * xh;
    }
  }
  float* mine = warp_sums + warp * (n + 1);
#pragma unroll
  for (int j = 0; j < kMaxCombineCols; ++j)
    if (lane + 32 * j < n) mine[lane + 32 * j] = dw_acc[j];
  dl = warp_sum(dl);
  if (lane == 0) mine[n] = dl;
  __syncthreads();
  for (int c = threadIdx.x; c <= n; c += blockDim.x) {
    float sum = 0.f;
    for (int v = 0; v < warps_per_block; ++v) sum += warp_sums[v * (n + 1) + c];
    partials[static_cast<int64_t>(blockIdx.x) * (n + 1) + c] = sum;
  }
}

// Adds the blocks' partial rows in block order: dw (if not null) += columns [0, n), and
// *dlambda = column n (in double).
__global__ void diff_combine_reduce_kernel(const float* partials, int blocks, int n, float* dw,
                                           double* dlambda) {
  for (int c = threadIdx.x; c <= n; c += blockDim.x) {
    double sum = 0;
    for (int b = 0; b < blocks; ++b) sum += partials[static_cast<int64_t>(b) * (n + 1) + c];
    if (c < n) {
      if (dw) dw[c] += static_cast<float>(sum);
    } else {
      *dlambda = sum;
    }
  }
}

// d lambda / d lq1 = e1 lk1, / d lk1 = e1 lq1, / d lq2 = -e2 lk2, / d lk2 = -e2 lq2 with
// e = exp(<lq, lk>). One warp; null outputs are skipped.
__global__ void diff_lambda_backward_kernel(const float* lq1, const float* lk1, const float* lq2,
                                            const float* lk2, int h, const double* dlambda,
                                            float* dlq1, float* dlk1, float* dlq2, float* dlk2) {
  const double e1 = exp(warp_dot(lq1, lk1, h)), e2 = exp(warp_dot(lq2, lk2, h));
  const double g1 = *dlambda * e1, g2 = *dlambda * e2;
  for (int i = threadIdx.x; i < h; i += 32) {
    if (dlq1) dlq1[i] += static_cast<float>(g1 * lk1[i]);
    if (dlk1) dlk1[i] += static_cast<float>(g1 * lq1[i]);
    if (dlq2) dlq2[i] -= static_cast<float>(g2 * lk2[i]);
    if (dlk2) dlk2[i] -= static_cast<float>(g2 * lq2[i]);
  }
}

// Each map: H/2 query heads over G/2 kv heads, dk = h, dv = 2h.
AttentionShape map_shape(const DiffAttentionShape& s) {
  return {s.B, s.L, s.H / 2, s.G / 2, s.h, 2 * s.h, s.window, s.Lk, s.q_offset};
}

// q1 = heads 2i of q: a head step of 2h inside rows of H h; q2 is the same view shifted by h.
// v as [B, L, G/2, 2h] and the maps a1, a2 [B, L, H/2, 2h] are contiguous.
AttentionStrides map_strides(const DiffAttentionShape& s) {
  return {s.H * s.h, 2 * s.h, s.G * s.h, 2 * s.h, s.G * s.h, 2 * s.h, s.H * s.h, 2 * s.h};
}

}  // namespace

void diff_attention_forward_cuda(const bf16* q, const bf16* k, const bf16* v, const int32_t* doc,
                                 const float* lq1, const float* lk1, const float* lq2,
                                 const float* lk2, float lambda_init, const float* norm_weight,
                                 bf16* out, const DiffAttentionSaved& saved,
                                 const DiffAttentionShape& s, float scale, float eps,
                                 cudaStream_t stream) {
  const DiffAttentionSavedSizes sizes = diff_attention_saved_sizes(s);  // validates s
  const AttentionShape inner = map_shape(s);
  check_attention_shape(inner);  // before anything is launched
  const AttentionStrides st = map_strides(s);
  const int h = static_cast<int>(s.h);

  diff_lambda_kernel<<<1, 32, 0, stream>>>(lq1, lk1, lq2, lk2, h, lambda_init, saved.lambda);
  SAMBAY_CUDA_CHECK_LAUNCH();
  float* lse1 = static_cast<float*>(saved.lse1);
  float* lse2 = static_cast<float*>(saved.lse2);
  attention_forward_strided_cuda(q, k, v, doc, saved.a1, true, lse1, inner, st, scale, stream);
  attention_forward_strided_cuda(q + h, k + h, v, doc, saved.a2, true, lse2, inner, st, scale,
                                 stream);

  const int64_t rows = sizes.rstd;
  const unsigned blocks = static_cast<unsigned>((rows + 7) / 8);
  diff_combine_kernel<<<blocks, 256, 0, stream>>>(
      static_cast<const float*>(saved.a1), static_cast<const float*>(saved.a2), saved.lambda,
      norm_weight, 1.f - lambda_init, eps, reinterpret_cast<bf16_t*>(out),
      static_cast<float*>(saved.rstd), rows, 2 * h);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

void diff_attention_backward_cuda(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                                  const int32_t* doc, const float* lq1, const float* lk1,
                                  const float* lq2, const float* lk2, float lambda_init,
                                  const float* norm_weight, const DiffAttentionSaved& saved,
                                  bf16* dq, bf16* dk, bf16* dv, float* dlq1, float* dlk1,
                                  float* dlq2, float* dlk2, float* dnorm_weight,
                                  const DiffAttentionShape& s, float scale, cudaStream_t stream) {
  const DiffAttentionSavedSizes sizes = diff_attention_saved_sizes(s);  // validates s
  check_attention_shape(map_shape(s));  // before anything is launched
  const bool lambda_grads = dlq1 || dlk1 || dlq2 || dlk2;
  if (!dq && !dk && !dv && !lambda_grads && !dnorm_weight) return;
  const int h = static_cast<int>(s.h), n = 2 * h;
  const int64_t rows = sizes.rstd;

  SAMBAY_CUDA_ARG_CHECK(n <= 32 * kMaxCombineCols,
                        "differential attention: head dim h must be <= 128");
  int device = 0, sms = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&device));
  SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int blocks =
      static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((rows + 7) / 8, 4 * sms)));

  // Workspace: dlambda (one double), the blocks' partial sums [blocks, n + 1] fp32, then da1
  // and da2 [rows, 2h] bf16.
  void* ws = nullptr;
  const size_t partial_bytes = (sizeof(float) * static_cast<size_t>(blocks) * (n + 1) + 255) / 256 * 256;
  const size_t map_bytes = (sizeof(bf16) * static_cast<size_t>(rows) * n + 255) / 256 * 256;
  SAMBAY_CUDA_CHECK(cudaMallocAsync(&ws, 256 + partial_bytes + 2 * map_bytes, stream));
  double* dlambda = static_cast<double*>(ws);
  float* partials = reinterpret_cast<float*>(static_cast<char*>(ws) + 256);
  bf16* da1 = reinterpret_cast<bf16*>(static_cast<char*>(ws) + 256 + partial_bytes);
  bf16* da2 = reinterpret_cast<bf16*>(static_cast<char*>(ws) + 256 + partial_bytes + map_bytes);

  const int threads = 256;
  diff_combine_backward_kernel<<<blocks, threads, sizeof(float) * (threads / 32) * (n + 1),
                                 stream>>>(
      reinterpret_cast<const bf16_t*>(dout), static_cast<const float*>(saved.a1),
      static_cast<const float*>(saved.a2), static_cast<const float*>(saved.rstd), saved.lambda,
      norm_weight, 1.f - lambda_init, reinterpret_cast<bf16_t*>(da1),
      reinterpret_cast<bf16_t*>(da2), partials, rows, n);
  SAMBAY_CUDA_CHECK_LAUNCH();
  diff_combine_reduce_kernel<<<1, 256, 0, stream>>>(partials, blocks, n, dnorm_weight, dlambda);
  SAMBAY_CUDA_CHECK_LAUNCH();
  if (lambda_grads) {
    diff_lambda_backward_kernel<<<1, 32, 0, stream>>>(lq1, lk1, lq2, lk2, h, dlambda, dlq1, dlk1,
                                                      dlq2, dlk2);
    SAMBAY_CUDA_CHECK_LAUNCH();
  }

  if (dq || dk || dv) {
    const AttentionShape inner = map_shape(s);
    const AttentionStrides st = map_strides(s);
    // Both maps read the same v, so both passes add into dv.
    attention_backward_strided_cuda(da1, q, k, v, doc, saved.a1, true,
                                    static_cast<const float*>(saved.lse1), dq, dk, dv, inner, st,
                                    scale, stream);
    attention_backward_strided_cuda(da2, q + h, k + h, v, doc, saved.a2, true,
                                    static_cast<const float*>(saved.lse2), dq ? dq + h : nullptr,
                                    dk ? dk + h : nullptr, dv, inner, st, scale, stream);
  }
  SAMBAY_CUDA_CHECK(cudaFreeAsync(ws, stream));
}

}  // namespace sambay
