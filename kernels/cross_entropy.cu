// Cross-entropy through the output head on the GPU, over vocabulary chunks with bf16 logits
// (the contract, the byte and FLOP budget: kernels/cross_entropy.h).
//
// Per chunk of `cols` vocabulary rows, in a bf16 slot [n, ld] (ld = min(chunk, V)):
//   forward:  logits = s h w_chunk^T (cuBLASLt, bf16 out, fp32 accumulation); one block per row
//             merges the chunk's (max, sum exp) into the row's running pair (online
//             log-sum-exp, fp32) and picks up the target's logit.
//   backward: the logits (kept, or the same GEMM again), one block per row turns its row in place
//             into G = grad_scale s (softmax - onehot), and two GEMMs: dh_f32 += G w_chunk,
//             dw_chunk += G^T h.
// Every reduction runs in a fixed order, and a chunk's logits are the same bits whether kept or
// recomputed, so results do not depend on kept_chunks.
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

// Folds W values into the running (m, s): the pack's max first, so the sum is rescaled at most
// once per pack. (m = -inf, s = 0 at the start: 0 * exp(-inf) = 0.)
template <int W>
__device__ __forceinline__ void fold_values(const float (&v)[W], float& m, float& s) {
  float top = v[0];
#pragma unroll
  for (int k = 1; k < W; ++k) top = fmaxf(top, v[k]);
  if (top > m) {
    s *= expf(m - top);
    m = top;
  }
#pragma unroll
  for (int k = 0; k < W; ++k) s += expf(v[k] - m);
}

__global__ void init_rows_kernel(float* row_max, float* row_sum, float* target_logit, int64_t n) {
  for (int64_t i = cuda::first_index(); i < n; i += cuda::grid_stride())
    row_max[i] = -INFINITY, row_sum[i] = 0.0f, target_logit[i] = 0.0f;
}

// One block per row: this chunk's (max, sum exp) merged into the row's running pair. Packs of W
// values (W = 8: 16-byte loads, ld % 8 == 0 and an aligned slot), then the cols % W tail.
template <int W>
__global__ void chunk_stats_kernel(const bf16_t* logits, int64_t ld, int64_t cols, int64_t first,
                                   const int32_t* targets, float* row_max, float* row_sum,
                                   float* target_logit) {
  const int64_t i = blockIdx.x;
  const int32_t target = targets[i];
  if (target < 0) return;  // ignored row (the whole block leaves)
  const bf16_t* row = logits + i * ld;
  float m = -INFINITY, s = 0.0f;
  const int64_t packs = cols / W;
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    float v[W];
    cuda::load_bf16<W>(row + p * W, v);
    fold_values<W>(v, m, s);
  }
  for (int64_t c = packs * W + threadIdx.x; c < cols; c += blockDim.x) {
    const float v[1] = {__bfloat162float(row[c])};
    fold_values<1>(v, m, s);
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
  if (target >= first && target < first + cols)
    target_logit[i] = __bfloat162float(row[target - first]);
}

struct LossTotals {
  double loss;
  long long valid;
  long long bad_row;  // first row with target >= V; LLONG_MAX if none
};

// One block: lse of every row, and the loss sum, valid count and first bad row, each reduced in
// a fixed order (the sum in double).
__global__ void finalize_kernel(const int32_t* targets, const float* row_max, const float* row_sum,
                                const float* target_logit, float* lse, int64_t n, int64_t V,
                                LossTotals* result) {
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
  *result = LossTotals{loss, valid, bad_row};
}

// One block per row: the row's bf16 logits become, in place, its bf16 gradient
// scale * (exp(logit - lse) - [column == target]); an ignored row becomes 0.
template <int W>
__global__ void chunk_gradient_kernel(bf16_t* logits, int64_t ld, int64_t cols, int64_t first,
                                      const int32_t* targets, const float* lse, float scale) {
  const int64_t i = blockIdx.x;
  const int32_t target = targets[i];
  bf16_t* row = logits + i * ld;
  const int64_t packs = cols / W;
  if (target < 0) {  // nothing of this row is read: write zeros
    const float zeros[W] = {};
    for (int64_t p = threadIdx.x; p < packs; p += blockDim.x)
      cuda::store_bf16<W>(row + p * W, zeros);
    for (int64_t c = packs * W + threadIdx.x; c < cols; c += blockDim.x)
      row[c] = __float2bfloat16_rn(0.0f);
    return;
  }
  const float row_lse = lse[i];
  const int64_t local_target = int64_t(target) - first;  // may lie outside this chunk
  for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
    float v[W];
    cuda::load_bf16<W>(row + p * W, v);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      float g = expf(v[k] - row_lse);
      if (p * W + k == local_target) g -= 1.0f;
      v[k] = g * scale;
    }
    cuda::store_bf16<W>(row + p * W, v);
  }
  for (int64_t c = packs * W + threadIdx.x; c < cols; c += blockDim.x) {
    float g = expf(__bfloat162float(row[c]) - row_lse);
    if (c == local_target) g -= 1.0f;
    row[c] = __float2bfloat16_rn(g * scale);
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

// The plan's chunks and where each one's logits live in the workspace.
struct Chunks {
  CrossEntropyWorkspace parts;
  char* base = nullptr;
  int64_t ld = 0;     // slot width: min(chunk, V)
  int64_t count = 0;  // chunks
  int64_t kept = 0;

  Chunks(const CrossEntropyPlan& p, void* workspace) {
    SAMBAY_CUDA_ARG_CHECK(p.n >= 0 && p.n < INT_MAX,
                          "cross-entropy: n = " + std::to_string(p.n) + " rows is out of range");
    parts = cross_entropy_workspace(p);  // validates the rest of the plan
    SAMBAY_CUDA_ARG_CHECK(workspace != nullptr && reinterpret_cast<uintptr_t>(workspace) % 256 == 0,
                          "cross-entropy: the workspace must be 256-byte aligned device memory");
    base = static_cast<char*>(workspace);
    ld = std::min(p.chunk, p.V);
    count = cross_entropy_chunks(p);
    kept = p.kept_chunks;
  }
  bf16* slot(int64_t c) const {
    return reinterpret_cast<bf16*>(base + (c < kept ? parts.kept + parts.slot_bytes * c
                                                    : parts.shared));
  }
  template <typename T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(base + offset);
  }
};

// The logits of chunk c into its slot: the one GEMM both passes run, with the same arguments.
void chunk_logits(const bf16* h, const bf16* w, const CrossEntropyPlan& p, const Chunks& ch,
                  int64_t c, float logit_scale, cudaStream_t stream) {
  const int64_t first = c * ch.ld, cols = std::min(ch.ld, p.V - first);
  gemm_bf16_cuda(false, true, p.n, cols, p.d, logit_scale, h, p.d, w + first * p.d, p.d, 0.0f,
                 ch.slot(c), ch.ld, nullptr, stream);
}

// Launches a per-row kernel over a slot with 16-byte packs when the rows allow them.
template <typename Launch>
void launch_rows(int64_t ld, Launch&& launch) {
  if (ld % 8 == 0)
    launch(std::integral_constant<int, 8>{});
  else
    launch(std::integral_constant<int, 1>{});
}

}  // namespace

double tied_cross_entropy_forward_cuda(const bf16* h, const bf16* w, const int32_t* targets,
                                       float* lse, const CrossEntropyPlan& plan,
                                       float logit_scale, void* workspace, int64_t* valid_rows,
                                       cudaStream_t stream) {
  const Chunks ch(plan, workspace);
  if (valid_rows) *valid_rows = 0;
  const int64_t n = plan.n, V = plan.V;
  if (n == 0) return 0.0;
  float* row_max = ch.at<float>(ch.parts.row_max);
  float* row_sum = ch.at<float>(ch.parts.row_sum);
  float* target_logit = ch.at<float>(ch.parts.target_logit);
  auto* result = ch.at<LossTotals>(ch.parts.result);

  init_rows_kernel<<<cuda::grid_size(n, 256, 1024), 256, 0, stream>>>(row_max, row_sum,
                                                                       target_logit, n);
  SAMBAY_CUDA_CHECK_LAUNCH();
  for (int64_t c = 0; c < ch.count; ++c) {
    const int64_t first = c * ch.ld, cols = std::min(ch.ld, V - first);
    chunk_logits(h, w, plan, ch, c, logit_scale, stream);
    launch_rows(ch.ld, [&](auto width) {
      constexpr int W = decltype(width)::value;
      chunk_stats_kernel<W><<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
          cuda::nv(ch.slot(c)), ch.ld, cols, first, targets, row_max, row_sum, target_logit);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
  }
  finalize_kernel<<<1, kFinalThreads, 0, stream>>>(targets, row_max, row_sum, target_logit, lse, n,
                                                   V, result);
  SAMBAY_CUDA_CHECK_LAUNCH();

  LossTotals host{};
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

void tied_cross_entropy_backward_cuda(const bf16* h, const bf16* w, const int32_t* targets,
                                      const float* lse, bf16* dh, float* dw,
                                      const CrossEntropyPlan& plan, float logit_scale,
                                      float grad_scale, void* workspace, cudaStream_t stream) {
  const Chunks ch(plan, workspace);
  const int64_t n = plan.n, d = plan.d, V = plan.V;
  if (n == 0 || (!dh && !dw)) return;
  float* dh_f32 = ch.at<float>(ch.parts.dh);
  const float scale = logit_scale * grad_scale;

  for (int64_t c = 0; c < ch.count; ++c) {
    const int64_t first = c * ch.ld, cols = std::min(ch.ld, V - first);
    bf16* grad = ch.slot(c);
    if (c >= ch.kept) chunk_logits(h, w, plan, ch, c, logit_scale, stream);
    launch_rows(ch.ld, [&](auto width) {
      constexpr int W = decltype(width)::value;
      chunk_gradient_kernel<W><<<static_cast<unsigned>(n), kRowThreads, 0, stream>>>(
          cuda::nv(grad), ch.ld, cols, first, targets, lse, scale);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
    const bf16* w_chunk = w + first * d;
    // dh_f32[n, d] (=, then +=) G[n, cols] w_chunk[cols, d]
    if (dh)
      gemm_bf16_cuda(false, false, n, d, cols, 1.0f, grad, ch.ld, w_chunk, d,
                     c == 0 ? 0.0f : 1.0f, dh_f32, d, nullptr, stream);
    // dw_chunk[cols, d] += G^T[cols, n] h[n, d]
    if (dw)
      gemm_bf16_cuda(true, false, cols, d, n, 1.0f, grad, ch.ld, h, d, 1.0f, dw + first * d, d,
                     nullptr, stream);
  }
  if (dh) {
    cuda::launch_packs(n * d, cuda::aligned16(dh), [&](auto width, unsigned grid, int threads) {
      constexpr int W = decltype(width)::value;
      add_f32_to_bf16_kernel<W><<<grid, threads, 0, stream>>>(dh_f32, cuda::nv(dh), n * d / W);
      SAMBAY_CUDA_CHECK_LAUNCH();
    });
  }
}

}  // namespace sambay
