// Causal depthwise conv1d fused with SiLU, on the GPU (contract in causal_conv1d.h).
//
// Both kernels give each thread a few adjacent channels (8 in the forward, one 16-byte access per
// token; 4 in the backward, which keeps four times as many per-channel values in registers) and a
// run of consecutive tokens, sliding a window of the last K inputs through registers, so every
// element of x is loaded from memory about once (plus a K-1 token halo per run, from L2).
// Forward: 2*K flops per element (plus the SiLU); bytes 2 (x) + 2 (y) per element: memory bound.
// Backward: recompute the pre-activation, dpre = dy * silu'(pre), then dx, dweight, dbias;
// bytes 2 (dy) + 2 (x) + 4 (dx read and written) per element: memory bound.
#include <algorithm>

#include "kernels/bf16_vec.cuh"
#include "kernels/causal_conv1d.h"

namespace sambay {
namespace {

using cuda::load_vec;

constexpr int kMaxK = 4;
constexpr int kForwardChannels = 8;   // per thread
constexpr int kBackwardChannels = 4;  // per thread
constexpr int kTokensPerThread = 16;
// Backward block: 32 channel groups (128 channels) by 8 runs of 16 tokens.
constexpr int kGroupsPerBlock = 32;
constexpr int kRunsPerBlock = 8;
static_assert(kRunsPerBlock * kTokensPerThread == kConvBackwardTokensPerBlock);

// The first token that token t's window may read, given that of token t-1: the window never
// reaches before t-K+1, the row start, or the first token of t's document.
__device__ inline int window_start(const int32_t* doc_row, int t, int previous_start, int K) {
  if (doc_row && t > 0 && doc_row[t] != doc_row[t - 1]) return t;
  return max(previous_start, t - K + 1);
}

// The window start of token t computed from scratch (the same rule, walking back).
__device__ inline int window_start_from_scratch(const int32_t* doc_row, int t, int K) {
  const int lowest = max(0, t - K + 1);
  int s = t;
  if (!doc_row) return lowest;
  while (s > lowest && doc_row[s - 1] == doc_row[s]) --s;
  return s;
}

template <int K, int V = kForwardChannels>
__global__ void conv_silu_forward_kernel(const bf16* __restrict__ x,
                                         const float* __restrict__ weight,
                                         const float* __restrict__ bias,
                                         const int32_t* __restrict__ doc, bf16* __restrict__ y,
                                         int L, int C, bool aligned) {
  const int c0 = (blockIdx.x * blockDim.x + threadIdx.x) * V;
  const int t0 = blockIdx.y * kTokensPerThread;
  const int b = blockIdx.z;
  if (c0 >= C) return;
  const int count = min(V, C - c0);
  const int t_end = min(t0 + kTokensPerThread, L);
  const bf16* xb = x + int64_t(b) * L * C + c0;
  bf16* yb = y + int64_t(b) * L * C + c0;
  const int32_t* doc_row = doc ? doc + int64_t(b) * L : nullptr;

  float w[V][K], bs[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    bs[j] = j < count ? bias[c0 + j] : 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) w[j][k] = j < count ? weight[(c0 + j) * K + k] : 0.f;
  }
  // win[k] holds token t-K+1+k while token t is processed (win[K-1] = x_t).
  float win[K][V];
#pragma unroll
  for (int k = 0; k < K - 1; ++k) {
    const int s = t0 - (K - 1) + k;
    if (s >= 0)
      load_vec<V>(xb + int64_t(s) * C, count, aligned, win[k]);
    else
#pragma unroll
      for (int j = 0; j < V; ++j) win[k][j] = 0.f;
  }
  int start = window_start_from_scratch(doc_row, t0, K);
  for (int t = t0; t < t_end; ++t) {
    if (t > t0) start = window_start(doc_row, t, start, K);
    load_vec<V>(xb + int64_t(t) * C, count, aligned, win[K - 1]);
    float out[V];
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = bs[j];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (t - (K - 1) + k < start) continue;
#pragma unroll
      for (int j = 0; j < V; ++j) out[j] = fmaf(w[j][k], win[k][j], out[j]);
    }
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] *= cuda::sigmoid(out[j]);
    cuda::store_vec<V>(yb + int64_t(t) * C, count, aligned, out);
#pragma unroll
    for (int k = 0; k < K - 1; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) win[k][j] = win[k + 1][j];
  }
}

// One thread: channels c0..c0+V-1 and the run [t0, t1) of tokens. dx of the run needs dpre of the
// outputs t0 .. t1+K-2 (those that read a token of the run), so the thread walks on K-1 tokens
// past its run; dweight and dbias take only t in [t0, t1), so each token counts once.
// dxw[k] accumulates dx of token t-K+1+k; the oldest (k = 0) is complete after output t.
template <int K, int V = kBackwardChannels>
__global__ void __launch_bounds__(kGroupsPerBlock* kRunsPerBlock)
    conv_silu_backward_kernel(const bf16* __restrict__ dy, const bf16* __restrict__ x,
                              const float* __restrict__ weight, const float* __restrict__ bias,
                              const int32_t* __restrict__ doc, bf16* __restrict__ dx,
                              float* __restrict__ partial, int L, int C, bool aligned) {
  const int c0 = (blockIdx.x * kGroupsPerBlock + threadIdx.x) * V;
  const int t0 = (blockIdx.y * kRunsPerBlock + threadIdx.y) * kTokensPerThread;
  const int b = blockIdx.z;
  const int count = c0 < C ? min(V, C - c0) : 0;

  float dw[V][K], db[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    db[j] = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) dw[j][k] = 0.f;
  }

  if (count > 0 && t0 < L) {
    const int t1 = min(t0 + kTokensPerThread, L);
    const int64_t row = int64_t(b) * L * C + c0;
    const int32_t* doc_row = doc ? doc + int64_t(b) * L : nullptr;
    float w[V][K], bs[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      bs[j] = j < count ? bias[c0 + j] : 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) w[j][k] = j < count ? weight[(c0 + j) * K + k] : 0.f;
    }
    float win[K][V], dxw[K][V];
#pragma unroll
    for (int k = 0; k < K; ++k)
#pragma unroll
      for (int j = 0; j < V; ++j) dxw[k][j] = 0.f;
#pragma unroll
    for (int k = 0; k < K - 1; ++k) {
      const int s = t0 - (K - 1) + k;
      if (s >= 0)
        load_vec<V>(x + row + int64_t(s) * C, count, aligned, win[k]);
      else
#pragma unroll
        for (int j = 0; j < V; ++j) win[k][j] = 0.f;
    }
    int start = window_start_from_scratch(doc_row, t0, K);
    const int t_last = t1 + K - 2;  // the last output that reads a token of the run
    for (int t = t0; t <= t_last; ++t) {
      if (t < L) {
        if (t > t0) start = window_start(doc_row, t, start, K);
        load_vec<V>(x + row + int64_t(t) * C, count, aligned, win[K - 1]);
        float pre[V], g[V];
#pragma unroll
        for (int j = 0; j < V; ++j) pre[j] = bs[j];
#pragma unroll
        for (int k = 0; k < K; ++k) {
          if (t - (K - 1) + k < start) continue;
#pragma unroll
          for (int j = 0; j < V; ++j) pre[j] = fmaf(w[j][k], win[k][j], pre[j]);
        }
        load_vec<V>(dy + row + int64_t(t) * C, count, aligned, g);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          const float s = cuda::sigmoid(pre[j]);
          g[j] *= s * (1.f + pre[j] * (1.f - s));  // d silu / d pre
        }
        const bool own = t < t1;
#pragma unroll
        for (int k = 0; k < K; ++k) {
          if (t - (K - 1) + k < start) continue;
#pragma unroll
          for (int j = 0; j < V; ++j) {
            dxw[k][j] = fmaf(w[j][k], g[j], dxw[k][j]);
            if (own) dw[j][k] = fmaf(g[j], win[k][j], dw[j][k]);
          }
        }
        if (own)
#pragma unroll
          for (int j = 0; j < V; ++j) db[j] += g[j];
      }
      const int done = t - (K - 1);  // dx of this token has all its terms now
      if (dx && done >= t0 && done < t1)
        cuda::accumulate_vec<V>(dx + row + int64_t(done) * C, count, aligned, dxw[0]);
#pragma unroll
      for (int k = 0; k < K - 1; ++k)
#pragma unroll
        for (int j = 0; j < V; ++j) {
          win[k][j] = win[k + 1][j];
          dxw[k][j] = dxw[k + 1][j];
        }
#pragma unroll
      for (int j = 0; j < V; ++j) dxw[K - 1][j] = 0.f;
    }
  }

  // Sum the block's runs (threadIdx.y) one tap at a time; partial row = this block's tokens,
  // laid out [C][K + 1] (the K taps, then the bias). Skipped (uniformly) when no parameter
  // gradient is wanted.
  if (!partial) return;
  __shared__ float sums[kRunsPerBlock][kGroupsPerBlock * V];
  float* out = partial + (int64_t(b) * gridDim.y + blockIdx.y) * C * (K + 1);
  const int tid = threadIdx.y * kGroupsPerBlock + threadIdx.x;
  const int block_c0 = blockIdx.x * kGroupsPerBlock * V;
#pragma unroll
  for (int k = 0; k <= K; ++k) {
#pragma unroll
    for (int j = 0; j < V; ++j) sums[threadIdx.y][threadIdx.x * V + j] = k < K ? dw[j][k] : db[j];
    __syncthreads();
    for (int i = tid; i < kGroupsPerBlock * V; i += kGroupsPerBlock * kRunsPerBlock) {
      float total = 0.f;
#pragma unroll
      for (int r = 0; r < kRunsPerBlock; ++r) total += sums[r][i];
      const int c = block_c0 + i;
      if (c < C) out[int64_t(c) * (K + 1) + k] = total;
    }
    __syncthreads();
  }
}

// dweight[c, k] += sum over partial rows (in row order), likewise dbias.
__global__ void conv_reduce_partials_kernel(const float* __restrict__ partial, int rows,
                                            int64_t width, int K, float* __restrict__ dweight,
                                            float* __restrict__ dbias) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  float total = 0.f;
  for (int r = 0; r < rows; ++r) total += partial[r * width + i];
  const int64_t c = i / (K + 1);
  const int k = int(i % (K + 1));
  if (k < K) {
    if (dweight) dweight[c * K + k] += total;
  } else if (dbias) {
    dbias[c] += total;
  }
}

void check_args(const char* fn, int64_t B, int64_t L, int64_t C, int64_t K) {
  cuda::require(
      B > 0 && L > 0 && C > 0 && K >= 1 && K <= kMaxK,
      std::string(fn) + " needs positive B, L, C and 1 <= K <= 4, got B=" + std::to_string(B) +
          " L=" + std::to_string(L) + " C=" + std::to_string(C) + " K=" + std::to_string(K));
  cuda::require(B <= 65535 && L * C < (int64_t(1) << 31) && L < (int64_t(1) << 24),
                std::string(fn) + ": shape too large, B=" + std::to_string(B) +
                    " L=" + std::to_string(L) + " C=" + std::to_string(C));
}

// Whether rows of C bf16 starting at p allow vector accesses of V elements.
template <int V>
bool is_aligned(int64_t C, const void* p) {
  return C % V == 0 && reinterpret_cast<uintptr_t>(p) % (2 * V) == 0;
}

template <int K>
void launch_forward(const bf16* x, const float* weight, const float* bias, const int32_t* doc,
                    bf16* y, int64_t B, int64_t L, int64_t C, cudaStream_t stream) {
  const int threads = 128;
  const int64_t groups = (C + kForwardChannels - 1) / kForwardChannels;
  const dim3 grid(unsigned((groups + threads - 1) / threads),
                  unsigned((L + kTokensPerThread - 1) / kTokensPerThread), unsigned(B));
  const bool aligned = is_aligned<kForwardChannels>(C, x) && is_aligned<kForwardChannels>(C, y);
  conv_silu_forward_kernel<K>
      <<<grid, threads, 0, stream>>>(x, weight, bias, doc, y, int(L), int(C), aligned);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

template <int K>
void launch_backward(const bf16* dy, const bf16* x, const float* weight, const float* bias,
                     const int32_t* doc, bf16* dx, float* dweight, float* dbias, float* workspace,
                     int64_t B, int64_t L, int64_t C, cudaStream_t stream) {
  const int64_t blocks_per_row =
      (L + kConvBackwardTokensPerBlock - 1) / kConvBackwardTokensPerBlock;
  const int64_t channels_per_block = kGroupsPerBlock * kBackwardChannels;
  const dim3 grid(unsigned((C + channels_per_block - 1) / channels_per_block),
                  unsigned(blocks_per_row), unsigned(B));
  const dim3 block(kGroupsPerBlock, kRunsPerBlock);
  constexpr int V = kBackwardChannels;
  const bool aligned = is_aligned<V>(C, dy) && is_aligned<V>(C, x) && (!dx || is_aligned<V>(C, dx));
  float* partial = (dweight || dbias) ? workspace : nullptr;
  conv_silu_backward_kernel<K>
      <<<grid, block, 0, stream>>>(dy, x, weight, bias, doc, dx, partial, int(L), int(C), aligned);
  SAMBAY_CUDA_CHECK_LAUNCH();
  if (!dweight && !dbias) return;
  const int64_t width = C * (K + 1);
  const int threads = 256;
  conv_reduce_partials_kernel<<<unsigned((width + threads - 1) / threads), threads, 0, stream>>>(
      workspace, int(B * blocks_per_row), width, K, dweight, dbias);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

// Calls f.template operator()<K>() for the runtime K (1..4).
template <typename F>
void dispatch_k(int64_t K, F&& f) {
  switch (K) {
    case 1:
      f.template operator()<1>();
      break;
    case 2:
      f.template operator()<2>();
      break;
    case 3:
      f.template operator()<3>();
      break;
    default:
      f.template operator()<4>();
      break;
  }
}

}  // namespace

void causal_conv1d_silu_forward_cuda(const bf16* x, const float* weight, const float* bias,
                                     const int32_t* doc, bf16* y, int64_t B, int64_t L, int64_t C,
                                     int64_t K, cudaStream_t stream) {
  check_args("causal_conv1d_silu_forward_cuda", B, L, C, K);
  dispatch_k(K, [&]<int KK>() { launch_forward<KK>(x, weight, bias, doc, y, B, L, C, stream); });
}

void causal_conv1d_silu_backward_cuda(const bf16* dy, const bf16* x, const float* weight,
                                      const float* bias, const int32_t* doc, bf16* dx,
                                      float* dweight, float* dbias, float* workspace, int64_t B,
                                      int64_t L, int64_t C, int64_t K, cudaStream_t stream) {
  check_args("causal_conv1d_silu_backward_cuda", B, L, C, K);
  cuda::require(workspace != nullptr || (!dweight && !dbias),
                "causal_conv1d_silu_backward_cuda: dweight/dbias need a workspace of "
                "causal_conv1d_silu_backward_workspace_floats floats");
  dispatch_k(K, [&]<int KK>() {
    launch_backward<KK>(dy, x, weight, bias, doc, dx, dweight, dbias, workspace, B, L, C, stream);
  });
}

}  // namespace sambay
