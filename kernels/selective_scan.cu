// Mamba-1 selective scan on the GPU, chunk-parallel (contract in selective_scan.h).
//
// Each batch row is cut into chunks of T = 64 tokens. The state after a chunk is linear in the
// state before it (the ScanCarry algebra), so every chunk is scanned at once and the chunks are
// joined through their carried states; at B1 L4096 E5120 there are 64 x 5120 independent
// (chunk, channel) walks instead of 5120, enough to fill every SM.
//
// Forward, three kernels:
//   F1 chunk_state   every chunk from a zero state: its last state h_c, and S_c = sum of its
//                    steps delta (-1 where a document starts inside the chunk: the state
//                    entering it does not pass, its decay is 0). One thread per channel.
//   F2 fold          one thread per (b, e, n), chunks in order: H_0 = state_in,
//                    H_{c+1} = h_c + exp(A S_c) H_c. H_c overwrites h_c in the checkpoint (the
//                    state entering every chunk, what the backward restarts from); the last H
//                    is state_out, exp(A sum_c S_c) (0 after a reset) is decay_out.
//   F3 chunk_output  every chunk again from its true H_c: y and out. One thread per channel.
// Backward, three kernels and two reductions:
//   B1 chunk_dstate  every chunk walked back from a zero gradient at its end: gl_c, the
//                    gradient of the state entering it from the chunk's own outputs.
//   B2 fold          one thread per (b, e, n), last chunk first: G_{C-1} = dstate_out,
//                    G_{c-1} = gl_c + exp(A S_c) G_c. G_c (the gradient arriving at chunk c's last
//                    state) overwrites gl_c; the last value is added into dstate_in.
//   B3 chunk_grad    every chunk with its true H_c and G_c, all gradients (below).
//   R1, R2           dBc, dCc summed over the channel parts; dA_log, dD, dt_bias summed over the
//                    (row, chunk) partials. Every sum in a fixed order.
//
// B3 needs, at every token t, the state s_{t-1} (forward direction) and the gradient g_t
// (backward direction). A block owns one chunk and 4 groups of 32 channels, one group at a time;
// a channel is owned by G = N/4 lanes holding 4 states each. Per group:
//   P  per (token, channel): delta = softplus(dt + dt_bias), delta x, gy = dout silu(z) +
//      dy_extra and the token's decay bias (-inf at a document start, so that
//      2^(delta A2 + bias) = 0 drops the state before it) into shared memory (lane = channel:
//      coalesced loads);
//   W2 walk the chunk forward from H_c, saving each lane's 4 states at the start of every span of
//      8 tokens (shared memory);
//   W3 per span, last first: recompute its 8 decays a_t and states s_t into registers from the
//      saved start, then walk back through it carrying g:
//        gn = g + gy C_t,  p1 = sum_n gn B_t,  p2 = sum_n gn A a_t s_{t-1},  y' = sum_n s_t C_t,
//        dA[n] += gn delta a_t s_{t-1},  dB_t[n] += gn delta x,  dC_t[n] += gy s_t[n],
//        g = gn a_t;
//      p1, p2, y' are summed over the channel's G lanes by shuffles; dB and dC over the warp's
//      channels on the tensor cores (below), then over the warps and the groups in shared
//      memory;
//   F  per (token, channel): dx, ddt, dz added into global memory, dD and dt_bias summed.
// With the entering states saved by the forward, the backward's only extra walk is W2's 7/8 of
// a chunk (the earlier kernel walked every chunk twice from the previous chunk's checkpoint).
//
// B3's sum of dB and dC over a warp's channels: the lanes are ordered so that a quad
// (lane / 4) holds the same 4 states of 4 channels; a tf32 mma.sync with 0/1 selector matrices
// adds a quad's values along its k dimension, four of them sum a token pair's 16 values per lane
// ([dB | dC] of 4 states, two tokens), one shuffle step adds the warp's two quads of the same
// states (2 instructions per lane and token, plus 4 shuffle-adds per pair). One barrier per
// span (the warps' partials double-buffered); F once per group after the walk back, reading the
// p sums the walk left in the walk tile. With the forward's y given, y' and its shuffles are
// skipped. The mma takes its A operands as tf32 (10-bit mantissa, truncated): dB and dC, stored
// as bf16, carry an added relative error below 2^-10 per term; every other gradient stays fp32
// throughout.
//
// Cost per state and token (a "state-token", B L E N of them), N = 16:
//   exponentials  forward 2 (F1, F3), backward 2.875 (B1, W2 7/8, W3). Per (token, channel) the
//                 softplus (one ex2 and a degree-9 polynomial, kernels/log1p_fma.h) and
//                 sigmoids (one ex2 and one rcp each) add 1/16 to 1/4 of an exp per state-token.
//   issue slots   the bound of every kernel (128 per SM and clock against 16 exps), counted in
//                 the SASS of the loops: F1 7.8, F3 9.7, B1 8.5; B3 about 32 with the
//                 forward's y (W2 4.3, W3 19.6 of which 12 are the walk's FMA-pipe core, P and F
//                 8.5). F1 and B1 run 1 of their 16 states' exps as exp2_fma on the FMA units,
//                 the split at which their special-function and issue loads balance; F3 and B3
//                 keep ex2.approx.
//   bytes         per (token, channel), beyond the minimum (x, dt, z in, y and out out; dout,
//                 x, dt, z, y in, dx, ddt, dz read and written): x and dt read twice in the
//                 forward (F1, F3), dt, z, dout twice in the backward (B1, B3) and x, dt, z,
//                 dout a third time, mostly from L2, in B3's F; and the chunk tensors: 4N/T = 1
//                 byte for each [B, chunks, E, N] fp32 pass (F1 write, F2 read+write, F3 read; B1
//                 write, B2 read+write, B3 read 2), the dB|dC partials 32 bytes per token per
//                 128 channels, the parameter partials 4(N+2)/T bytes.
// At B1 L4096 E5120 N16 (3.4e8 state-tokens): exps 6.7e8 forward, 9.6e8 backward (0.41 ms at
// 4e12/s); issue slots about 58 per state-token, 0.61 ms at 1.9 GHz if every SM issued every
// clock; bytes about 0.36 GB forward and 0.75 GB backward (0.26 ms at 4.2 TB/s, most of it
// overlapped with the walks). The times measured against these floors: docs/performance.md.
#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "kernels/bf16_vec.cuh"
#include "kernels/exp2_fma.h"
#include "kernels/log1p_fma.h"
#include "kernels/selective_scan.h"

namespace sambay {
namespace {

constexpr int kChunk = int(kSelectiveScanChunk);  // T
constexpr int kRowThreads = 128;                  // F1, F3, B1: one channel per thread
constexpr int kGroupChannels = 32;                // B3: channels per group
constexpr int kGroups = int(kSelectiveScanPartChannels) / kGroupChannels;  // B3: per block
constexpr int kSpan = 8;                          // B3: tokens held in registers at once
constexpr int kSpans = kChunk / kSpan;
constexpr int kFoldThreads = 256;
constexpr int kFoldBatch = 8;  // F2, B2: chunks whose loads are issued together
constexpr int kReduceThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
static_assert(kChunk % kSpan == 0 && kChunk % 4 == 0 && kSpan % 2 == 0);

// States whose decays F1 and B1 evaluate with exp2_fma (see the cost note above); F3 none.
template <int N>
inline constexpr int kFmaDecays = N / 16;

// ---- small device helpers ----

// 1 / v to 1 ulp on the special-function unit; 0 for v = inf.
__device__ inline float rcp_approx(float v) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

// 1 / (1 + e^-v) from one ex2 and one rcp (relative error below 1e-6 for |v| < 30; 0 below
// v = -88, where e^-v overflows).
__device__ inline float sigmoid(float v) {
  return rcp_approx(1.f + cuda::exp2_approx(-v * kLog2e));
}

// log(1 + e^v) without overflow: max(v, 0) + log1p(e^-|v|).
__device__ inline float softplus(float v) {
  return fmaxf(v, 0.f) + log1p_fma(cuda::exp2_approx(-fabsf(v) * kLog2e));
}

// dLoss/dy = dout * silu(z) + dy_extra: the same expression in B1 and B3.
__device__ inline float gate_gradient(float dout, float z, float dy_extra) {
  return fmaf(dout * z, sigmoid(z), dy_extra);
}

// dLoss/dz = dout * y * silu'(z), silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))).
__device__ inline float gate_z_gradient(float dout, float y, float z) {
  const float sz = sigmoid(z);
  return dout * y * sz * fmaf(z, 1.f - sz, 1.f);
}

// fp32 to bf16, rounded to nearest even (the hardware conversion); and p += v, the sum formed in
// fp32 and rounded once.
__device__ inline bf16 bf16_rn(float v) {
  return bf16::from_bits(__bfloat16_as_ushort(__float2bfloat16_rn(v)));
}
__device__ inline void add_to_bf16(bf16* p, float v) { *p = bf16_rn(to_float(*p) + v); }

// A = -exp(A_log) in log2 units, so that exp(delta A) = 2^(delta A2).
__device__ inline float log2_decay_rate(float A_log) { return -expf(A_log) * kLog2e; }

// The exponent bias of token t's decays: -inf where t starts a document, 0 elsewhere. On the
// special-function unit 2^(delta A2 - inf) = 0 drops the state before t at no cost per state.
__device__ inline float decay_bias(bool fresh) { return fresh ? -INFINITY : 0.f; }

// exp(delta A) of state n in F1, F3 and B1 (a thread walks all N states of a channel), 0 where
// the token starts a document (bias -inf): the last kFma states on the FMA units, the others on
// the special-function unit. Unrolled loops make n a constant, so the choice costs nothing.
template <int N, int kFma>
__device__ inline float row_decay(int n, float delta, float A2, float bias) {
  if (n >= N - kFma) return bias < 0.f ? 0.f : exp2_fma(delta * A2);
  return cuda::exp2_approx(fmaf(delta, A2, bias));
}

// True where token t >= 1 of the row starts a new document. Token 0 never does: it continues
// state_in (the caller zeroes rows whose token 0 starts a document).
__device__ inline bool starts_document(const int32_t* doc_row, int t) {
  return doc_row && t > 0 && doc_row[t] != doc_row[t - 1];
}

// The chunk's rows of Bc (or Cc) as fp32 in shared memory, zero past the end of the sequence;
// and the decay bias of each of its tokens. Called by every thread of the block.
template <int N>
__device__ inline void stage_rows(float (*dst)[N], const bf16* src, int len) {
  for (int i = threadIdx.x; i < kChunk * N; i += blockDim.x)
    dst[i / N][i % N] = i < len * N ? to_float(src[i]) : 0.f;
}
__device__ inline void stage_fresh_bias(float* bias, const int32_t* doc_row, int t0, int len) {
  for (int t = threadIdx.x; t < kChunk; t += blockDim.x)
    bias[t] = decay_bias(t < len && starts_document(doc_row, t0 + t));
}

__device__ inline float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ inline void store4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}

// ---- forward ----

struct ForwardArgs {
  const bf16 *x, *dt, *Bc, *Cc, *z;
  const float *dt_bias, *A_log, *D;
  const int32_t* doc;
  bf16 *y, *out;
  float* chunk_state;  // [B, chunks, E, N]: h_c after F1, H_c after F2
  float* chunk_sum;    // [B, chunks, E]: S_c, or -1 where a document starts inside the chunk
  const float* state_in;
  float *state_out, *decay_out;
  int B, L, E, chunks;
};

// F1. One thread per channel, its N states in registers; a block is 128 channels of one chunk.
template <int N>
__global__ void __launch_bounds__(kRowThreads) scan_chunk_state_kernel(const ForwardArgs a) {
  constexpr int kFma = kFmaDecays<N>;
  __shared__ __align__(16) float Bs[kChunk][N];
  __shared__ float fresh_bias[kChunk];
  const int c = blockIdx.y, b = blockIdx.z, t0 = c * kChunk, len = min(kChunk, a.L - t0);
  const int64_t row0 = int64_t(b) * a.L;
  stage_rows<N>(Bs, a.Bc + (row0 + t0) * N, len);
  stage_fresh_bias(fresh_bias, a.doc ? a.doc + row0 : nullptr, t0, len);
  __syncthreads();
  const int e = blockIdx.x * kRowThreads + threadIdx.x;
  if (e >= a.E) return;  // no barrier follows

  float A2[N];
#pragma unroll
  for (int n = 0; n < N; ++n) A2[n] = log2_decay_rate(a.A_log[int64_t(e) * N + n]);
  const float bias = a.dt_bias[e];
  const bf16* x = a.x + (row0 + t0) * a.E + e;
  const bf16* dt = a.dt + (row0 + t0) * a.E + e;
  float s[N] = {};
  float delta_sum = 0.f;
  bool reset = false;
  for (int tb = 0; tb < len; tb += 4) {
    // Four tokens' loads issued together (past the end: the last token again, unused).
    float xv[4], dtv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int at = min(tb + u, len - 1) * a.E;  // 32-bit offsets (L E < 2^31)
      xv[u] = to_float(x[at]);
      dtv[u] = to_float(dt[at]);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int t = tb + u;
      if (t >= len) break;
      const float delta = softplus(dtv[u] + bias), delta_x = delta * xv[u];
      const float fb = fresh_bias[t];
      reset = reset || fb < 0.f;
#pragma unroll
      for (int n = 0; n < N; ++n)
        s[n] = fmaf(row_decay<N, kFma>(n, delta, A2[n], fb), s[n], delta_x * Bs[t][n]);
      delta_sum += delta;
    }
  }
  const int64_t row = (int64_t(b) * a.chunks + c) * a.E + e;
#pragma unroll
  for (int n = 0; n < N; n += 4)
    store4(a.chunk_state + row * N + n, s[n], s[n + 1], s[n + 2], s[n + 3]);
  a.chunk_sum[row] = reset ? -1.f : delta_sum;
}

// The decay of a whole chunk from its summed steps (0 where a document starts inside it).
__device__ inline float chunk_decay(float A2, float S) { return S < 0.f ? 0.f : exp2f(A2 * S); }

// F2. One thread per (b, e, n).
template <int N>
__global__ void __launch_bounds__(kFoldThreads) scan_fold_forward_kernel(const ForwardArgs a) {
  const int64_t idx = blockIdx.x * int64_t(kFoldThreads) + threadIdx.x;  // (b * E + e) * N + n
  if (idx >= int64_t(a.B) * a.E * N) return;
  const int n = int(idx % N), e = int(idx / N % a.E);
  const int64_t b = idx / N / a.E;
  const float A2 = log2_decay_rate(a.A_log[int64_t(e) * N + n]);
  float* state = a.chunk_state + (b * a.chunks * a.E + e) * N + n;  // chunk c: + c * E * N
  const float* sum = a.chunk_sum + b * a.chunks * a.E + e;          // chunk c: + c * E
  const int64_t state_stride = int64_t(a.E) * N;
  float H = a.state_in ? a.state_in[idx] : 0.f, total = 0.f;
  bool reset = false;
  for (int c0 = 0; c0 < a.chunks; c0 += kFoldBatch) {
    float h[kFoldBatch], S[kFoldBatch];
#pragma unroll
    for (int k = 0; k < kFoldBatch; ++k) {
      const int c = min(c0 + k, a.chunks - 1);  // past the end: a chunk of this batch again
      h[k] = state[c * state_stride];
      S[k] = sum[int64_t(c) * a.E];
    }
#pragma unroll
    for (int k = 0; k < kFoldBatch; ++k) {
      if (c0 + k >= a.chunks) break;
      state[(c0 + k) * state_stride] = H;
      reset = reset || S[k] < 0.f;
      total += fmaxf(S[k], 0.f);
      H = fmaf(chunk_decay(A2, S[k]), H, h[k]);
    }
  }
  if (a.state_out) a.state_out[idx] = H;
  if (a.decay_out) a.decay_out[idx] = reset ? 0.f : exp2f(A2 * total);
}

// F3. One thread per channel, from the state entering the chunk.
template <int N>
__global__ void __launch_bounds__(kRowThreads) scan_chunk_output_kernel(const ForwardArgs a) {
  __shared__ __align__(16) float Bs[kChunk][N];
  __shared__ __align__(16) float Cs[kChunk][N];
  __shared__ float fresh_bias[kChunk];
  const int c = blockIdx.y, b = blockIdx.z, t0 = c * kChunk, len = min(kChunk, a.L - t0);
  const int64_t row0 = int64_t(b) * a.L;
  stage_rows<N>(Bs, a.Bc + (row0 + t0) * N, len);
  stage_rows<N>(Cs, a.Cc + (row0 + t0) * N, len);
  stage_fresh_bias(fresh_bias, a.doc ? a.doc + row0 : nullptr, t0, len);
  __syncthreads();
  const int e = blockIdx.x * kRowThreads + threadIdx.x;
  if (e >= a.E) return;  // no barrier follows

  float A2[N], s[N];
  const float* H = a.chunk_state + ((int64_t(b) * a.chunks + c) * a.E + e) * N;
#pragma unroll
  for (int n = 0; n < N; n += 4) {
    const float4 h = load4(H + n);
    s[n] = h.x, s[n + 1] = h.y, s[n + 2] = h.z, s[n + 3] = h.w;
  }
#pragma unroll
  for (int n = 0; n < N; ++n) A2[n] = log2_decay_rate(a.A_log[int64_t(e) * N + n]);
  const float bias = a.dt_bias[e], Dv = a.D[e];
  const int64_t first = (row0 + t0) * a.E + e;  // (b, t0, e); per token 32-bit offsets t E
  const bf16 *x = a.x + first, *dt = a.dt + first, *z = a.z + first;
  for (int tb = 0; tb < len; tb += 4) {
    float xv[4], dtv[4], zv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int at = min(tb + u, len - 1) * a.E;
      xv[u] = to_float(x[at]);
      dtv[u] = to_float(dt[at]);
      zv[u] = to_float(z[at]);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int t = tb + u;
      if (t >= len) break;
      const float delta = softplus(dtv[u] + bias), delta_x = delta * xv[u];
      const float fb = fresh_bias[t];
      float readout[2] = {0.f, 0.f};  // two partial sums: half the dependent chain
#pragma unroll
      for (int n = 0; n < N; ++n) {
        s[n] = fmaf(row_decay<N, 0>(n, delta, A2[n], fb), s[n], delta_x * Bs[t][n]);
        readout[n & 1] = fmaf(s[n], Cs[t][n], readout[n & 1]);
      }
      const float yv = fmaf(Dv, xv[u], readout[0] + readout[1]);
      const int at = t * a.E;
      if (a.y) a.y[first + at] = bf16_rn(yv);
      if (a.out) a.out[first + at] = bf16_rn(yv * zv[u] * sigmoid(zv[u]));
    }
  }
}

// ---- backward ----

struct GradArgs {
  const bf16 *dout, *dy_extra, *x, *dt, *Bc, *Cc, *z;
  const bf16* y;  // the forward's y, or null (B3 recomputes it)
  const float *dt_bias, *A_log, *D;
  const int32_t* doc;
  const float* chunk_state;  // H_c [B, chunks, E, N] (the checkpoint)
  const float* chunk_sum;    // S_c [B, chunks, E] (the checkpoint)
  float* chunk_dstate;       // [B, chunks, E, N]: gl_c after B1, G_c after B2
  const float* dstate_out;
  float* dstate_in;
  bf16 *dx, *ddt, *dz;
  float* dBC_partial;    // [B, parts, L, 2N]
  float* param_partial;  // [B, chunks, E, N + 2]: dA_log | dD | ddt_bias
  int B, L, E, chunks, parts;
};

// B1. One thread per channel, walking its chunk back from a zero gradient.
template <int N>
__global__ void __launch_bounds__(kRowThreads) scan_chunk_dstate_kernel(const GradArgs a) {
  constexpr int kFma = kFmaDecays<N>;
  __shared__ __align__(16) float Cs[kChunk][N];
  __shared__ float fresh_bias[kChunk];
  const int c = blockIdx.y, b = blockIdx.z, t0 = c * kChunk, len = min(kChunk, a.L - t0);
  const int64_t row0 = int64_t(b) * a.L;
  stage_rows<N>(Cs, a.Cc + (row0 + t0) * N, len);
  stage_fresh_bias(fresh_bias, a.doc ? a.doc + row0 : nullptr, t0, len);
  __syncthreads();
  const int e = blockIdx.x * kRowThreads + threadIdx.x;
  if (e >= a.E) return;  // no barrier follows

  float A2[N];
#pragma unroll
  for (int n = 0; n < N; ++n) A2[n] = log2_decay_rate(a.A_log[int64_t(e) * N + n]);
  const float bias = a.dt_bias[e];
  const int64_t first = (row0 + t0) * a.E + e;  // (b, t0, e); per token 32-bit offsets t E
  const bf16 *dt = a.dt + first, *z = a.z + first, *dout = a.dout + first;
  const bf16* dy_extra = a.dy_extra ? a.dy_extra + first : nullptr;
  float g[N] = {};
  for (int tb = (len - 1) / 4 * 4; tb >= 0; tb -= 4) {
    float dtv[4], zv[4], dov[4], dyv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int at = min(tb + u, len - 1) * a.E;
      dtv[u] = to_float(dt[at]);
      zv[u] = to_float(z[at]);
      dov[u] = to_float(dout[at]);
      dyv[u] = dy_extra ? to_float(dy_extra[at]) : 0.f;
    }
#pragma unroll
    for (int u = 3; u >= 0; --u) {
      const int t = tb + u;
      if (t >= len) continue;
      const float delta = softplus(dtv[u] + bias);
      const float gy = gate_gradient(dov[u], zv[u], dyv[u]);
      const float fb = fresh_bias[t];  // at a document start the decay 0 stops the gradient
#pragma unroll
      for (int n = 0; n < N; ++n)
        g[n] = fmaf(gy, Cs[t][n], g[n]) * row_decay<N, kFma>(n, delta, A2[n], fb);
    }
  }
  float* out = a.chunk_dstate + ((int64_t(b) * a.chunks + c) * a.E + e) * N;
#pragma unroll
  for (int n = 0; n < N; n += 4) store4(out + n, g[n], g[n + 1], g[n + 2], g[n + 3]);
}

// B2. One thread per (b, e, n), last chunk first.
template <int N>
__global__ void __launch_bounds__(kFoldThreads) scan_fold_backward_kernel(const GradArgs a) {
  const int64_t idx = blockIdx.x * int64_t(kFoldThreads) + threadIdx.x;  // (b * E + e) * N + n
  if (idx >= int64_t(a.B) * a.E * N) return;
  const int n = int(idx % N), e = int(idx / N % a.E);
  const int64_t b = idx / N / a.E;
  const float A2 = log2_decay_rate(a.A_log[int64_t(e) * N + n]);
  float* dstate = a.chunk_dstate + (b * a.chunks * a.E + e) * N + n;  // chunk c: + c * E * N
  const float* sum = a.chunk_sum + b * a.chunks * a.E + e;            // chunk c: + c * E
  const int64_t state_stride = int64_t(a.E) * N;
  float G = a.dstate_out ? a.dstate_out[idx] : 0.f;
  for (int c0 = a.chunks - 1; c0 >= 0; c0 -= kFoldBatch) {
    float gl[kFoldBatch], S[kFoldBatch];
#pragma unroll
    for (int k = 0; k < kFoldBatch; ++k) {
      const int c = max(c0 - k, 0);  // past the start: a chunk of this batch again
      gl[k] = dstate[c * state_stride];
      S[k] = sum[int64_t(c) * a.E];
    }
#pragma unroll
    for (int k = 0; k < kFoldBatch; ++k) {
      if (c0 - k < 0) break;
      dstate[(c0 - k) * state_stride] = G;
      G = fmaf(chunk_decay(A2, S[k]), G, gl[k]);
    }
  }
  if (a.dstate_in) a.dstate_in[idx] += G;
}

// ---- B3: dB and dC summed over the warp's channels on the tensor cores ----

// D += A S for one m16n8k8 tf32 tile. PTX fragment layouts, with g = lane / 4 and t = lane % 4:
// a0..a3 hold A[g][t], A[g + 8][t], A[g][t + 4], A[g + 8][t + 4]; b0, b1 hold S[t][g], S[t + 4][g];
// d0..d3 hold D[g][2t], D[g][2t + 1], D[g + 8][2t], D[g + 8][2t + 1]. The A values enter as tf32
// (the low 13 bits of their mantissas dropped); the products with S's 0s and 1s and the sums are
// fp32.
__device__ inline void mma_tf32(float d[4], const float a[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])),
        "r"(__float_as_uint(a[3])), "r"(b0), "r"(b1));
}

// A token pair's [dB | dC] terms summed over the warp's Cw channels, the four lanes of a quad
// holding the same 4 states (4 sg .. 4 sg + 3) of four channels. Value i of quantity r (dB at
// the pair's first token, dC there, dB at its second, dC there) is v_r[i]. mma_tf32 with the
// selector S_r (S_r[k][n] = 1 for k < 4, n = 2r and for k >= 4, n = 2r + 1: b0 = [g == 2r],
// b1 = [g == 2r + 1], sel[i] = [g == i]) puts the quad's sums of v_r[0], v_r[1], v_r[2],
// v_r[3] into D[g][2r], D[g + 8][2r], D[g][2r + 1], D[g + 8][2r + 1]; after all four, lane
// (g, t) holds the quad's sums of quantity t as d0, d2, d1, d3. add_quantity adds the two of
// one token into d; warp_channel_total then adds the quads of the same states (lanes that
// differ in bits 2 .. log2(Cw) - 1) and returns quantity lane % 4 for the lane's 4 states.
__device__ inline void add_quantity(float d[4], const float v[4], int r, const uint32_t sel[8]) {
  mma_tf32(d, v, sel[2 * r], sel[2 * r + 1]);
}
template <int Cw>
__device__ inline float4 warp_channel_total(float d[4]) {
#pragma unroll
  for (int mask = 4; mask < Cw; mask <<= 1)
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] += __shfl_xor_sync(kFullMask, d[i], mask);
  return make_float4(d[0], d[2], d[1], d[3]);
}

// B3's shared memory (N = 16: 73 KB, three blocks per SM).
template <int N>
struct MmaGradShared {
  static constexpr int kThreads = kGroupChannels * N / 4;
  static constexpr int kWarps = kThreads / 32;
  // Per (token, channel): P writes delta, delta x, gy and the token's decay bias; the walk back
  // of the token overwrites them with what F needs: p1 and p2 (with A in log2 units), and with
  // the forward's y given delta and gy (for dx = gy D + delta p1), else dx and y' (y - D x).
  float4 walk[kChunk][kGroupChannels];
  alignas(16) float B[kChunk][N];
  alignas(16) float C[kChunk][N];
  float fresh_bias[kChunk];
  float4 span_start[kSpans][kThreads];                  // a thread's 4 states entering each span
  alignas(16) float warp_dBC[2][kWarps][kSpan][2 * N];  // [dB | dC] per warp, by span parity
  alignas(16) float chunk_dBC[kChunk][2 * N];           // ... over the block's channels
  float2 param[kThreads];                               // each thread's dD and dt_bias sums
};

// B3. Block (part, c, b): chunk c of row b, channels part * 128 + [0, 128) in groups
// of 32. In the walks, lane = sg * Cw + ch: channel warp * Cw + ch of the group (Cw = 32 / G per
// warp), states 4 sg .. 4 sg + 3. kSavedY: the forward's y is given (no y' in the walk).
template <int N, bool kSavedY>
__global__ void __launch_bounds__(MmaGradShared<N>::kThreads, N == 16 ? 3 : 1)
    scan_chunk_grad_mma_kernel(const GradArgs a) {
  constexpr int G = N / 4;    // lanes per channel in the walks
  constexpr int Cw = 32 / G;  // channels per warp
  using Shared = MmaGradShared<N>;
  constexpr int kThreads = Shared::kThreads, kWarps = Shared::kWarps;
  static_assert(Cw % 4 == 0 && kWarps * Cw == kGroupChannels);
  extern __shared__ __align__(16) unsigned char shared_raw[];
  Shared& sh = *reinterpret_cast<Shared*>(shared_raw);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ch = lane % Cw, sg = lane / Cw;
  const int j = warp * Cw + ch;  // the walk's channel in the group
  uint32_t sel[8];               // selector fragments: [lane / 4 == i] as tf32 0 or 1
#pragma unroll
  for (int i = 0; i < 8; ++i) sel[i] = __float_as_uint((lane >> 2) == i ? 1.f : 0.f);
  const int part = blockIdx.x, c = blockIdx.y, b = blockIdx.z;
  const int L = a.L, E = a.E;
  const int t0 = c * kChunk, len = min(kChunk, L - t0);
  const int64_t row0 = int64_t(b) * L;
  const int64_t chunk_row = int64_t(b) * a.chunks + c;  // row of the [B, chunks, ...] tensors

  stage_rows<N>(sh.B, a.Bc + (row0 + t0) * N, len);
  stage_rows<N>(sh.C, a.Cc + (row0 + t0) * N, len);
  stage_fresh_bias(sh.fresh_bias, a.doc ? a.doc + row0 : nullptr, t0, len);
  for (int i = tid; i < kChunk * 2 * N; i += kThreads) (&sh.chunk_dBC[0][0])[i] = 0.f;
  __syncthreads();  // fresh_bias ready for P (B, C, chunk_dBC are read after P's barrier)

  for (int group = 0; group < kGroups; ++group) {
    const int e0 = (part * kGroups + group) * kGroupChannels;
    const int width = min(kGroupChannels, E - e0);  // channels of the group that exist
    if (width <= 0) break;                          // the same for the whole block

    // P: lane = channel, warps split the tokens. The previous group's last reads of `walk`
    // (its F) came before its last barrier.
    const bool lane_exists = lane < width;
    const float bias = lane_exists ? a.dt_bias[e0 + lane] : 0.f;
    // (b, t0, channel `lane`); token t at the 32-bit offset t E (L E < 2^31).
    const int64_t first = (row0 + t0) * E + e0 + min(lane, width - 1);
    const bf16 *x = a.x + first, *dt = a.dt + first, *z = a.z + first, *dout = a.dout + first;
    const bf16* dy_extra = a.dy_extra ? a.dy_extra + first : nullptr;
    float dD_sum = 0.f, ddt_bias_sum = 0.f;  // of channel `lane`, over this thread's tokens
    static_assert(kChunk % (4 * kWarps) == 0);
    for (int tb = warp; tb < kChunk; tb += 4 * kWarps) {
      // Four tokens' loads issued together (past the end: the last token again, unused).
      float xv[4], dtv[4], zv[4], dov[4], dyv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int at = min(tb + u * kWarps, len - 1) * E;
        xv[u] = to_float(x[at]);
        dtv[u] = to_float(dt[at]);
        zv[u] = to_float(z[at]);
        dov[u] = to_float(dout[at]);
        dyv[u] = dy_extra ? to_float(dy_extra[at]) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int t = tb + u * kWarps;
        const float delta = softplus(dtv[u] + bias);
        const float gy = gate_gradient(dov[u], zv[u], dyv[u]);
        const bool real = lane_exists && t < len;
        sh.walk[t][lane] = real ? make_float4(delta, delta * xv[u], gy, sh.fresh_bias[t])
                                : make_float4(0.f, 0.f, 0.f, 0.f);
        if (real) dD_sum = fmaf(gy, xv[u], dD_sum);
      }
    }
    __syncthreads();  // walk (and at the first group B, C, chunk_dBC) ready

    // The lane's 4 states: rates, the state entering the chunk, the gradient leaving it.
    // Channels past E hold zeros throughout (their walk entries are zero).
    const bool owns = j < width;
    float A2[4], s[4], g[4], dA[4] = {0.f, 0.f, 0.f, 0.f};
    {
      const int64_t at = (chunk_row * E + e0 + j) * N + 4 * sg;
      const float4 h = owns ? load4(a.chunk_state + at) : make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 d = owns ? load4(a.chunk_dstate + at) : make_float4(0.f, 0.f, 0.f, 0.f);
      s[0] = h.x, s[1] = h.y, s[2] = h.z, s[3] = h.w;
      g[0] = d.x, g[1] = d.y, g[2] = d.z, g[3] = d.w;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        A2[k] = owns ? log2_decay_rate(a.A_log[int64_t(e0 + j) * N + 4 * sg + k]) : 0.f;
    }
    const float Dv = owns ? a.D[e0 + j] : 0.f;

    // W2: the states entering every span (the last span's start is the last one needed). W2
    // and the recompute below evaluate the same expressions: the same bits.
#pragma unroll 1
    for (int span = 0; span < kSpans; ++span) {
      sh.span_start[span][tid] = make_float4(s[0], s[1], s[2], s[3]);
      if (span + 1 == kSpans) break;
#pragma unroll
      for (int u = 0; u < kSpan; ++u) {
        const int t = span * kSpan + u;
        const float4 w = sh.walk[t][j];  // delta, delta x, gy, decay bias
        const float4 Bv = load4(&sh.B[t][4 * sg]);
        const float Bk[4] = {Bv.x, Bv.y, Bv.z, Bv.w};
#pragma unroll
        for (int k = 0; k < 4; ++k)
          s[k] = fmaf(cuda::exp2_approx(fmaf(w.x, A2[k], w.w)), s[k], w.y * Bk[k]);
      }
    }

    // W3: spans last to first.
#pragma unroll 1
    for (int span = kSpans - 1; span >= 0; --span) {
      // The span's decays and states, recomputed exactly as W2 computed them.
      float decay[kSpan][4], state[kSpan][4], start[4];
      {
        const float4 h = sh.span_start[span][tid];
        start[0] = h.x, start[1] = h.y, start[2] = h.z, start[3] = h.w;
      }
#pragma unroll
      for (int u = 0; u < kSpan; ++u) {
        const int t = span * kSpan + u;
        const float4 w = sh.walk[t][j];
        const float4 Bv = load4(&sh.B[t][4 * sg]);
        const float Bk[4] = {Bv.x, Bv.y, Bv.z, Bv.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          decay[u][k] = cuda::exp2_approx(fmaf(w.x, A2[k], w.w));
          state[u][k] = fmaf(decay[u][k], u > 0 ? state[u - 1][k] : start[k], w.y * Bk[k]);
        }
      }
      // Walk back through the span, a token pair at a time.
      float(*const warp_dBC)[2 * N] = sh.warp_dBC[span & 1][warp];
#pragma unroll
      for (int pair = kSpan / 2 - 1; pair >= 0; --pair) {
        float d[4] = {0.f, 0.f, 0.f, 0.f};  // the pair's [dB | dC] sums (see add_quantity)
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // the pair's later token, then its earlier one
          const int u = 2 * pair + 1 - h, t = span * kSpan + u;
          const float4 w = sh.walk[t][j];  // delta, delta x, gy, decay bias
          const float4 Bv = load4(&sh.B[t][4 * sg]), Cv = load4(&sh.C[t][4 * sg]);
          const float Bk[4] = {Bv.x, Bv.y, Bv.z, Bv.w}, Ck[4] = {Cv.x, Cv.y, Cv.z, Cv.w};
          float p1 = 0.f, p2 = 0.f, yp = 0.f, dB[4], dC[4];  // this channel's terms
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float gn = fmaf(w.z, Ck[k], g[k]);  // dLoss/ds_t, all paths
            const float prev = u > 0 ? state[u - 1][k] : start[k];
            g[k] = gn * decay[u][k];     // dLoss/ds_{t-1}
            const float q = g[k] * prev;  // gn a_t s_{t-1}
            p1 = fmaf(gn, Bk[k], p1);
            p2 = fmaf(q, A2[k], p2);
            dA[k] = fmaf(q, w.x, dA[k]);
            dB[k] = gn * w.y;
            dC[k] = w.z * state[u][k];
            if (!kSavedY) yp = fmaf(state[u][k], Ck[k], yp);
          }
#pragma unroll
          for (int mask = Cw; mask < 32; mask <<= 1) {  // over the channel's G lanes
            p1 += __shfl_xor_sync(kFullMask, p1, mask);
            p2 += __shfl_xor_sync(kFullMask, p2, mask);
            if (!kSavedY) yp += __shfl_xor_sync(kFullMask, yp, mask);
          }
          // Every lane of the channel has read walk[t][j] before the shuffles: overwrite it
          // (the layouts F reads).
          if (sg == 0)
            sh.walk[t][j] = kSavedY ? make_float4(w.x, p1, w.z, p2)
                                    : make_float4(fmaf(w.z, Dv, w.x * p1), p1, p2, yp);
          add_quantity(d, dB, 2 * h, sel);
          add_quantity(d, dC, 2 * h + 1, sel);
        }
        const float4 total = warp_channel_total<Cw>(d);
        if (ch < 4) {  // lane % 4 == ch: quantity ch of the pair, for states 4 sg ..
          const int u = 2 * pair + 1 - (ch >> 1);
          *reinterpret_cast<float4*>(&warp_dBC[u][(ch & 1) * N + 4 * sg]) = total;
        }
      }
      __syncthreads();  // the span's walk entries and warp_dBC complete
      // dB, dC of the span summed over the block's warps, added to the chunk's sums. No
      // barrier after: the next span writes the other warp_dBC buffer, and this one only after
      // its own barrier.
      static_assert(kSpan * 2 * N % kThreads == 0);
#pragma unroll
      for (int r = 0; r < kSpan * 2 * N / kThreads; ++r) {
        const int i = tid + r * kThreads, u = i / (2 * N), q = i % (2 * N);
        float total = 0.f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) total += sh.warp_dBC[span & 1][w][u][q];
        sh.chunk_dBC[span * kSpan + u][q] += total;
      }
    }

    // F: per (token, channel), lane = channel, warps split the tokens (the walk entries of
    // every token were written before the last span's barrier).
    if (lane_exists) {
      const float Dl = a.D[e0 + lane];
      const bf16* y = kSavedY ? a.y + first : nullptr;
      bf16* dx = a.dx ? a.dx + first : nullptr;
      bf16* ddt = a.ddt ? a.ddt + first : nullptr;
      bf16* dz = a.dz ? a.dz + first : nullptr;
      for (int tb = warp; tb < len; tb += 2 * kWarps) {
        // Two tokens' loads issued together (past the end: the last token again, unused).
        float xv[2], zv[2], dtv[2], dov[2], ysv[2];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int at = min(tb + u * kWarps, len - 1) * E;
          xv[u] = to_float(x[at]);
          zv[u] = to_float(z[at]);
          dtv[u] = to_float(dt[at]);
          dov[u] = to_float(dout[at]);
          ysv[u] = kSavedY ? to_float(y[at]) : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int t = tb + u * kWarps, at = t * E;
          if (t >= len) break;
          // kSavedY: delta, p1, gy, p2; else the dx term, p1, p2, y'.
          const float4 r = sh.walk[t][lane];
          const float yv = kSavedY ? ysv[u] : fmaf(Dl, xv[u], r.w);
          const float p1 = r.y, p2 = kSavedY ? r.w : r.z;
          // dx = gy D + delta p1; ddelta = x p1 + p2 (A = A2 ln 2); softplus' = sigmoid.
          const float dxv = kSavedY ? fmaf(r.z, Dl, r.x * p1) : r.x;
          const float ddtv = fmaf(xv[u], p1, p2 * kLn2) * sigmoid(dtv[u] + bias);
          ddt_bias_sum += ddtv;
          if (dx) add_to_bf16(dx + at, dxv);
          if (ddt) add_to_bf16(ddt + at, ddtv);
          if (dz) add_to_bf16(dz + at, gate_z_gradient(dov[u], yv, zv[u]));
        }
      }
    }

    // Per-channel parameter gradients of this chunk: dA_log = dA * A from the walking lanes,
    // dD and dt_bias summed over the kWarps threads that handled a channel's tokens.
    float* params = a.param_partial + (chunk_row * E + e0) * (N + 2);
    if (owns)
#pragma unroll
      for (int k = 0; k < 4; ++k)
        params[j * (N + 2) + 4 * sg + k] =
            dA[k] * -expf(a.A_log[int64_t(e0 + j) * N + 4 * sg + k]);
    sh.param[tid] = make_float2(dD_sum, ddt_bias_sum);
    __syncthreads();  // also: every F read of walk and every chunk_dBC sum done
    if (tid < width) {
      float dD = 0.f, ddt_bias = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        dD += sh.param[tid + 32 * w].x;
        ddt_bias += sh.param[tid + 32 * w].y;
      }
      params[tid * (N + 2) + N] = dD;
      params[tid * (N + 2) + N + 1] = ddt_bias;
    }
    // The next group writes `param` again only after two more barriers.
  }

  // The chunk's dB | dC partial of this part (chunk_dBC last written before a barrier).
  float* out = a.dBC_partial + ((int64_t(b) * a.parts + part) * L + t0) * 2 * N;
  for (int i = tid; i < len * 2 * N; i += kThreads) out[i] = (&sh.chunk_dBC[0][0])[i];
}

// R1. dBc[b, t, n] += sum over parts (in order), likewise dCc.
__global__ void scan_reduce_dBC_kernel(const float* __restrict__ partial, int parts, int L, int N,
                                       int64_t total, bf16* __restrict__ dBc,
                                       bf16* __restrict__ dCc) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;  // over [B, L, 2N]
  if (i >= total) return;
  const int64_t per_row = int64_t(L) * 2 * N;
  const int64_t b = i / per_row, rest = i % per_row;
  const int64_t t = rest / (2 * N);
  const int v = int(rest % (2 * N));
  bf16* dst = v < N ? dBc : dCc;
  if (!dst) return;
  float sum = 0.f;
  for (int p = 0; p < parts; ++p) sum += partial[(b * parts + p) * per_row + rest];
  add_to_bf16(dst + (b * L + t) * N + (v % N), sum);
}

// R2. dA_log[e, n], dD[e], ddt_bias[e] += sums over the (row, chunk) partials (in order).
__global__ void scan_reduce_params_kernel(const float* __restrict__ partial, int64_t rows, int E,
                                          int N, float* __restrict__ dA_log,
                                          float* __restrict__ dD, float* __restrict__ ddt_bias) {
  const int64_t width = int64_t(E) * (N + 2);
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= width) return;
  float sum = 0.f;
  for (int64_t r = 0; r < rows; ++r) sum += partial[r * width + i];
  const int64_t e = i / (N + 2);
  const int k = int(i % (N + 2));
  if (k < N) {
    if (dA_log) dA_log[e * N + k] += sum;
  } else if (k == N) {
    if (dD) dD[e] += sum;
  } else if (ddt_bias) {
    ddt_bias[e] += sum;
  }
}

// ---- host side ----

std::string describe(const SelectiveScanShape& s) {
  return " B=" + std::to_string(s.B) + " L=" + std::to_string(s.L) + " E=" + std::to_string(s.E) +
         " N=" + std::to_string(s.N);
}

void check_shape(const char* fn, const SelectiveScanShape& s) {
  cuda::require(s.B > 0 && s.L > 0 && s.E > 0,
                std::string(fn) + " needs positive sizes, got" + describe(s));
  cuda::require(s.N == 4 || s.N == 8 || s.N == 16,
                std::string(fn) + " supports N = 4, 8 or 16, got" + describe(s));
  // Grid limits (rows and chunks are grid dimensions) and 32-bit token and channel indices.
  cuda::require(s.B <= 65535 && selective_scan_chunks(s) <= 65535 &&
                    s.L * s.E < (int64_t(1) << 31) && s.B * s.E * s.N < (int64_t(1) << 31),
                std::string(fn) + ": shape too large," + describe(s));
}

void check_buffer(const char* fn, const char* what, const void* p) {
  cuda::require(p != nullptr, std::string(fn) + " needs " + what + " (got a null pointer)");
  cuda::require(reinterpret_cast<uintptr_t>(p) % 16 == 0,
                std::string(fn) + ": " + what + " must be 16-byte aligned");
}

unsigned blocks(int64_t work, int per_block) {
  return unsigned((work + per_block - 1) / per_block);
}

template <int N>
void launch_forward(const ForwardArgs& a, bool outputs, cudaStream_t stream) {
  const dim3 rows(blocks(a.E, kRowThreads), unsigned(a.chunks), unsigned(a.B));
  scan_chunk_state_kernel<N><<<rows, kRowThreads, 0, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
  scan_fold_forward_kernel<N>
      <<<blocks(int64_t(a.B) * a.E * N, kFoldThreads), kFoldThreads, 0, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
  if (!outputs) return;
  scan_chunk_output_kernel<N><<<rows, kRowThreads, 0, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

// B3 as `Kernel` with its shared memory `Shared`, grid (parts, chunks, B).
template <typename Shared>
void launch_chunk_grad(void (*kernel)(GradArgs), const GradArgs& a, cudaStream_t stream) {
  const size_t shared = sizeof(Shared);
  SAMBAY_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
  const dim3 grid(unsigned(a.parts), unsigned(a.chunks), unsigned(a.B));
  kernel<<<grid, Shared::kThreads, shared, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

template <int N>
void launch_backward(const GradArgs& a, bool gradients, cudaStream_t stream) {
  const dim3 rows(blocks(a.E, kRowThreads), unsigned(a.chunks), unsigned(a.B));
  scan_chunk_dstate_kernel<N><<<rows, kRowThreads, 0, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
  scan_fold_backward_kernel<N>
      <<<blocks(int64_t(a.B) * a.E * N, kFoldThreads), kFoldThreads, 0, stream>>>(a);
  SAMBAY_CUDA_CHECK_LAUNCH();
  if (!gradients) return;
  if (a.y)
    launch_chunk_grad<MmaGradShared<N>>(scan_chunk_grad_mma_kernel<N, true>, a, stream);
  else
    launch_chunk_grad<MmaGradShared<N>>(scan_chunk_grad_mma_kernel<N, false>, a, stream);
}

template <typename F>
void dispatch_n(int64_t N, F&& f) {
  switch (N) {
    case 4:
      f.template operator()<4>();
      break;
    case 8:
      f.template operator()<8>();
      break;
    default:
      f.template operator()<16>();
      break;
  }
}

}  // namespace

void selective_scan_forward_cuda(const bf16* x, const bf16* dt, const float* dt_bias,
                                 const float* A_log, const bf16* Bc, const bf16* Cc, const float* D,
                                 const bf16* z, const int32_t* doc, bf16* y, bf16* out,
                                 float* checkpoint, const SelectiveScanShape& s,
                                 cudaStream_t stream, const ScanCarry<float>& carry) {
  const char* fn = "selective_scan_forward_cuda";
  check_shape(fn, s);
  check_buffer(fn, "the checkpoint buffer", checkpoint);
  const int64_t chunks = selective_scan_chunks(s);
  ForwardArgs a{};
  a.x = x, a.dt = dt, a.Bc = Bc, a.Cc = Cc, a.z = z;
  a.dt_bias = dt_bias, a.A_log = A_log, a.D = D, a.doc = doc;
  a.y = y, a.out = out;
  a.chunk_state = checkpoint;
  a.chunk_sum = checkpoint + s.B * chunks * s.E * s.N;
  a.state_in = carry.state_in, a.state_out = carry.state_out, a.decay_out = carry.decay_out;
  a.B = int(s.B), a.L = int(s.L), a.E = int(s.E), a.chunks = int(chunks);
  dispatch_n(s.N, [&]<int N>() { launch_forward<N>(a, y || out, stream); });
}

void selective_scan_backward_cuda(const bf16* dout, const bf16* dy_extra, const bf16* x,
                                  const bf16* dt, const float* dt_bias, const float* A_log,
                                  const bf16* Bc, const bf16* Cc, const float* D, const bf16* z,
                                  const bf16* y, const int32_t* doc, const float* checkpoint,
                                  bf16* dx, bf16* ddt, float* ddt_bias, float* dA_log, bf16* dBc,
                                  bf16* dCc, float* dD, bf16* dz, float* workspace,
                                  const SelectiveScanShape& s, cudaStream_t stream,
                                  const ScanCarry<float>& carry) {
  const char* fn = "selective_scan_backward_cuda";
  check_shape(fn, s);
  check_buffer(fn, "the forward's checkpoint", checkpoint);
  check_buffer(fn, "a workspace", workspace);
  const int64_t chunks = selective_scan_chunks(s), parts = selective_scan_parts(s);
  GradArgs a{};
  a.dout = dout, a.dy_extra = dy_extra, a.x = x, a.dt = dt, a.Bc = Bc, a.Cc = Cc, a.z = z;
  a.y = y;
  a.dt_bias = dt_bias, a.A_log = A_log, a.D = D, a.doc = doc;
  a.chunk_state = checkpoint;
  a.chunk_sum = checkpoint + s.B * chunks * s.E * s.N;
  a.chunk_dstate = workspace;
  a.dBC_partial = a.chunk_dstate + s.B * chunks * s.E * s.N;
  a.param_partial = a.dBC_partial + s.B * parts * s.L * 2 * s.N;
  a.dstate_out = carry.dstate_out, a.dstate_in = carry.dstate_in;
  a.dx = dx, a.ddt = ddt, a.dz = dz;
  a.B = int(s.B), a.L = int(s.L), a.E = int(s.E), a.chunks = int(chunks), a.parts = int(parts);
  const bool gradients = dx || ddt || ddt_bias || dA_log || dBc || dCc || dD || dz;
  dispatch_n(s.N, [&]<int N>() { launch_backward<N>(a, gradients, stream); });
  if (!gradients) return;

  if (dBc || dCc) {
    const int64_t total = s.B * s.L * 2 * s.N;
    scan_reduce_dBC_kernel<<<blocks(total, kReduceThreads), kReduceThreads, 0, stream>>>(
        a.dBC_partial, int(parts), int(s.L), int(s.N), total, dBc, dCc);
    SAMBAY_CUDA_CHECK_LAUNCH();
  }
  if (dA_log || dD || ddt_bias) {
    const int64_t width = s.E * (s.N + 2);
    scan_reduce_params_kernel<<<blocks(width, kReduceThreads), kReduceThreads, 0, stream>>>(
        a.param_partial, s.B * chunks, int(s.E), int(s.N), dA_log, dD, ddt_bias);
    SAMBAY_CUDA_CHECK_LAUNCH();
  }
}

int64_t selective_scan_cuda_exp2_count(const SelectiveScanShape& s, bool backward) {
  const int64_t state_tokens = s.B * s.L * s.E * s.N;
  // Forward: F1 and F3 once each. Backward: B1 and W3 once each, W2 over all spans but the last.
  return backward ? 2 * state_tokens + state_tokens * (kSpans - 1) / kSpans : 2 * state_tokens;
}

}  // namespace sambay
