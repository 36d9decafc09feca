// Tied-head cross-entropy on the GPU, over vocabulary chunks (kernels/cross_entropy.h).
//
// Per chunk of `cols` vocabulary rows:
//   forward:  logits[n, cols] = s h E_chunk^T (cuBLASLt, fp32 out); one block per row merges the
//             chunk's (max, sum exp) into the row's running pair (online log-sum-exp, fp32) and
//             picks up the target's logit.
//   backward: the same logits, then one block per row turns its row in place into the bf16
//             gradient G = grad_scale s (softmax - onehot), and two GEMMs: dh_f32 += G E_chunk,
//             demb_chunk += G^T h.
// FLOPs: forward 2 n V d; backward 6 n V d. Bytes beyond the GEMMs' operands: the fp32 logits,
// written and read once per pass (8 n V forward; 8 n V + 2 n V bf16 backward).
// The bf16 gradient of row i occupies the first half of the bytes of its fp32 logits row, so the
// GEMMs read G with a leading dimension of 2 chunk bf16 values and no second buffer is needed.
#include "kernels/cross_entropy.h"

#include <algorithm>
#include <climits>
#include <cmath>

#include "kernels/cuda_util.cuh"
#include "kernels/gemm.h"

namespace sambay {
namespace {

using cuda::bf16_t;

constexpr int kRowThreads = 256;
constexpr int kFinalThreads = 1024;

// Folds (m2, s2) into (m, s): the pair (max, sum of exp(x - max)) of the union. An empty pair has
// m = -inf, s = 0 and is skipped, which avoids exp(-inf - (-inf)) = NaN.
__device__ __forceinline__ void merge_lse(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2, s = s2;
    return;
  }
  const float top = fmaxf(m, m2);
  s = s * expf(m - top) + s2 * expf(m2 - top);
  m = top;
}

__global__ void init_rows_kernel(float* row_max, float* row_sum, float* target_logit, int64_t n) {
  for (int64_t i = cuda::first_index(); i < n; i += cuda::grid_stride())
    row_max[i] = -INFINITY, row_sum[i] = 0.0f, target_logit[i] = 0.0f;
}

// One block per row: this chunk's (max, sum exp) merged into the row's running pair.
__global__ void chunk_stats_kernel(const float* logits, int64_t ld, int64_t cols, int64_t first,
                                   const int32_t* targets, float* row_max, float* row_sum,
                                   float* target_logit) {
  const int64_t i = blockIdx.x;
  const int32_t target = targets[i];
  if (target < 0) return;  // ignored row (the whole block leaves)
  const float* row = logits + i * ld;
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = row[c];
    if (v > m) {
      s = s * expf(m - v) + 1.0f;  // first value: 0 * exp(-inf) + 1
      m = v;
    } else {
      s += expf(v - m);
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset);
    const float s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    merge_lse(m, s, m2, s2);
  }
  __shared__ float warp_max[32], warp_sum[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = m, warp_sum[warp] = s;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < int(blockDim.x >> 5); ++w) merge_lse(m, s, warp_max[w], warp_sum[w]);
  float running_max = row_max[i], running_sum = row_sum[i];
  merge_lse(running_max, running_sum, m, s);
  row_max[i] = running_max;
  row_sum[i] = running_sum;
  if (target >= first && target < first + cols) target_logit[i] = row[target - first];
}

struct ForwardResult {
  double loss;
  long long valid;
  long long bad_row;  // first row with target >= V; LLONG_MAX if none
};

// One block: lse of every row, and the loss sum, valid count and first bad row, each reduced in
// a fixed order (the sum in double).
__global__ void finalize_kernel(const int32_t* targets, const float* row_max, const float* row_sum,
                                const float* target_logit, float* lse, int64_t n, int64_t V,
                                ForwardResult* result) {
  double loss = 0.0;
  long long valid = 0, bad_row = LLONG_MAX;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int32_t target = targets[i];
    if (target < 0) {
      lse[i] = 0.0f;
      continue;
    }
    if (target >= V && i < bad_row) bad_row = i;
    const float row_lse = row_max[i] + logf(row_sum[i]);
    lse[i] = row_lse;
    loss += double(row_lse) - double(target_logit[i]);
    ++valid;
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    loss += __shfl_xor_sync(0xffffffffu, loss, offset);
    valid += __shfl_xor_sync(0xffffffffu, valid, offset);
    bad_row = min(bad_row, __shfl_xor_sync(0xffffffffu, bad_row, offset));
  }
  __shared__ double warp_loss[32];
  __shared__ long long warp_valid[32], warp_bad[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_loss[warp] = loss, warp_valid[warp] = valid, warp_bad[warp] = bad_row;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < int(blockDim.x >> 5); ++w) {
    loss += warp_loss[w];
    valid += warp_valid[w];
    bad_row = min(bad_row, warp_bad[w]);
  }
  *result = ForwardResult{loss, valid, bad_row};
}

// One block per row: the row's fp32 logits become, in place, its bf16 gradient
// scale * (exp(logit - lse) - [column == target]). The bf16 value of column c lands on the bytes
// of fp32 column c / 2, so the row is processed in tiles: every thread reads its values of the
// tile, the block synchronises, then the tile is written. A tile's writes only cover fp32
// columns of that tile or earlier ones, all read by then; later tiles are untouched.
__global__ void chunk_gradient_kernel(float* logits, int64_t ld, int64_t cols, int64_t first,
                                      const int32_t* targets, const float* lse, float scale) {
  constexpr int kPerThread = 4;
  const int64_t i = blockIdx.x;
  const int32_t target = targets[i];
  const float* in = logits + i * ld;
  bf16_t* out = reinterpret_cast<bf16_t*>(logits + i * ld);
  if (target < 0) {  // nothing of this row is read: write zeros directly
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[c] = __float2bfloat16_rn(0.0f);
    return;
  }
  const float row_lse = lse[i];
  const int64_t tile = int64_t(kPerThread) * blockDim.x;
  for (int64_t c0 = 0; c0 < cols; c0 += tile) {
    float g[kPerThread];
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      const int64_t c = c0 + threadIdx.x + int64_t(q) * blockDim.x;
      g[q] = 0.0f;
      if (c < cols) {
        float p = expf(in[c] - row_lse);
        if (first + c == target) p -= 1.0f;
        g[q] = p * scale;
      }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kPerThread; ++q) {
      const int64_t c = c0 + threadIdx.x + int64_t(q) * blockDim.x;
      if (c < cols) out[c] = __float2bfloat16_rn(g[q]);
    }
  }
}

// dst (bf16) += src (fp32), rounded once.
template <int W>
__global__ void add_f32_to_bf16_kernel(const float* src, bf16_t* dst, int64_t packs) {
  for (int64_t p = cuda::first_index(); p < packs; p += cuda::grid_stride()) {
    float v[W];
    cuda::load_bf16<W>(dst + p * W, v);
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] += src[p * W + k];
    cuda::store_bf16<W>(dst + p * W, v);
  }
}

void check_arguments(int64_t n, int64_t d, int64_t V, int64_t chunk) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0 && n < INT_MAX && d >= 1 && V >= 1,
                        "cross-entropy: bad shape n=" + std::to_string(n) + " d=" +
                            std::to_string(d) + " V=" + std::to_string(V));
  SAMBAY_CUDA_ARG_CHECK(chunk >= 1,
                        "cross-entropy: vocabulary chunk must be >= 1, got " + std::to_string(chunk));
}

}  // namespace

double tied_cross_entropy_forward_cuda(const bf16* h, const bf16* emb, const int32_t* targets,
                                       float* lse, int64_t n, int64_t d, int64_t V,
                                       float logit_scale, int64_t chunk, int64_t* valid_rows,
                                       cudaStream_t stream) {
  check_arguments(n, d, V, chunk);
  if (valid_rows) *valid_rows = 0;
  if (n == 0) return 0.0;
  chunk = std::min(chunk, V);
  // [logits n x chunk | row_max | row_sum | target_logit | result], parts 256-byte aligned.
  auto rounded = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t logits_bytes = rounded(sizeof(float) * n * chunk), row_bytes = rounded(sizeof(float) * n);
  cuda::DeviceScratch scratch(logits_bytes + 3 * row_bytes + sizeof(ForwardResult), stream);
  char* base = scratch.as<char>();
  float* logits = reinterpret_cast<float*>(base);
  float* row_max = reinterpret_cast<float*>(base + logits_bytes);
  float* row_sum = reinterpret_cast<float*>(base + logits_bytes + row_bytes);
  float* target_logit = reinterpret_cast<float*>(base + logits_bytes + 2 * row_bytes);
  auto* result = reinterpret_cast<ForwardResult*>(base + logits_bytes + 3 * row_bytes);

  init_rows_kernel<<<cuda::grid_size(n, 256, 1024), 256, 0, stream>>>(row_max, row_sum,
                                                                       target_logit, n);
  SAMBAY_CUDA_CHECK_LAUNCH();
  for (int64_t first = 0; first < V; first += chunk) {
    const int64_t cols = std::min(chunk, V - first);
    gemm_bf16_cuda(false, true, n, cols, d, logit_scale, h, d, emb + first * d, d, 0.0f, logits,
                   chunk, nullptr, stream);
    chunk_stats_kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
        logits, chunk, cols, first, targets, row_max, row_sum, target_logit);
    SAMBAY_CUDA_CHECK_LAUNCH();
  }
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(targets, row_max, row_sum, target_logit, lse, n,
                                                   V, result);
  SAMBAY_CUDA_CHECK_LAUNCH();

  ForwardResult host{};
  SAMBAY_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof host, cudaMemcpyDeviceToHost, stream));
  SAMBAY_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (host.bad_row != LLONG_MAX) {
    int32_t target = 0;
    SAMBAY_CUDA_CHECK(cudaMemcpy(&target, targets + host.bad_row, sizeof target,
                                 cudaMemcpyDeviceToHost));
    fail_message("cross-entropy: target " + std::to_string(target) + " at row " +
                 std::to_string(host.bad_row) + " is >= vocabulary size " + std::to_string(V));
  }
  if (valid_rows) *valid_rows = host.valid;
  return host.loss;
}

void tied_cross_entropy_backward_cuda(const bf16* h, const bf16* emb, const int32_t* targets,
                                      const float* lse, bf16* dh, float* demb, int64_t n,
                                      int64_t d, int64_t V, float logit_scale, int64_t chunk,
                                      float grad_scale, cudaStream_t stream) {
  check_arguments(n, d, V, chunk);
  if (n == 0 || (!dh && !demb)) return;
  chunk = std::min(chunk, V);
  const size_t logits_bytes = (sizeof(float) * n * chunk + 255) / 256 * 256;
  cuda::DeviceScratch scratch(logits_bytes + (dh ? sizeof(float) * n * d : 0), stream);
  float* logits = scratch.as<float>();
  float* dh_f32 = reinterpret_cast<float*>(scratch.as<char>() + logits_bytes);
  // The bf16 gradient rows, read by the GEMMs with leading dimension 2 chunk (see the top).
  const bf16* grad = reinterpret_cast<const bf16*>(logits);
  const int64_t ld_grad = 2 * chunk;
  const float scale = logit_scale * grad_scale;

  for (int64_t first = 0; first < V; first += chunk) {
    const int64_t cols = std::min(chunk, V - first);
    const bf16* emb_chunk = emb + first * d;
    gemm_bf16_cuda(false, true, n, cols, d, logit_scale, h, d, emb_chunk, d, 0.0f, logits, chunk,
                   nullptr, stream);
    chunk_gradient_kernel<<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
        logits, chunk, cols, first, targets, lse, scale);
    SAMBAY_CUDA_CHECK_LAUNCH();
    // dh_f32[n, d] (=, then +=) G[n, cols] E_chunk[cols, d]
    if (dh)
      gemm_bf16_cuda(false, false, n, d, cols, 1.0f, grad, ld_grad, emb_chunk, d,
                     first == 0 ? 0.0f : 1.0f, dh_f32, d, nullptr, stream);
    // demb_chunk[cols, d] += G^T[cols, n] h[n, d]
    if (demb)
      gemm_bf16_cuda(true, false, cols, d, n, 1.0f, grad, ld_grad, h, d, 1.0f, demb + first * d,
                     d, nullptr, stream);
  }
  if (dh) {
    cuda::launch_packs(n * d, cuda::aligned16(dh), [&](auto w, unsigned grid, int threads) {
      constexpr int W = decltype(w)::value;
      add_f32_to_bf16_kernel<W><<<grid, threads, 0, stream>>>(dh_f32, cuda::nv(dh), n * d / W);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
  }
}

}  // namespace sambay
