// Causal / sliding-window attention with GQA and doc masking on the GPU, FlashAttention-2 style.
//
// Forward (one CTA per (query tile of BR rows, query head, batch row)): Q tile in shared memory,
// K/V tiles of BC keys double-buffered with cp.async, S = Q K^T and O += P V on tensor cores
// (mma.sync m16n8k16 bf16 -> fp32), online softmax in registers, P fed to the second product
// straight from the accumulators. Each warp owns 16 * MT query rows. Only key tiles that meet
// the causal band / window are visited; masks are evaluated only on tiles that cross an edge
// (or always under doc masking).
//
// Backward (FlashAttention-2): D = rowsum(dout * out) first; then one CTA per (key tile of BC,
// kv head, batch row) keeps dK, dV for its keys in registers while it loops over every query
// head of its GQA group and every query tile that sees its keys: it recomputes P^T = exp(S^T -
// lse) and dS^T = P^T (dP^T - D), and adds dS K into an fp32 dQ buffer with atomics. Warp (kw,
// cw) owns 16 keys and one of CW column slices; P^T and dS^T go through shared memory so the
// products over all queries can be formed by any warp.
//
// Resources (nvcc 13.0, sm_90, --resource-usage; smem = dynamic shared memory per CTA):
//   forward  dk/dv   warps x rows/warp, keys per stage/sub-tile   regs  spill  smem    CTAs/SM
//            64/64   4 x 32, 64/64                                255   0      55 KB   2
//            64/128  4 x 32, 64/32                                255   0      71 KB   2
//            128/128 4 x 32, 64/32                                255   8 B    103 KB  2
//            128/256 8 x 16, 64/32                                255   0      135 KB  1
//   backward 64 keys x 64 queries per step, 8 warps (4 key rows x 2 column halves):
//            64/64 161 regs, 74 KB; 64/128 199 regs, 98 KB; 128/128 208 regs, 122 KB;
//            128/256 255 regs, 170 KB; no spills; one CTA per SM (256 threads).
//
// FLOPs (the work counted by bench_attention): with n = number of visible (query, key) pairs
// per head, forward 2 n (dk + dv), backward 2 n (3 dk + 2 dv). Minimum HBM traffic is one read
// of q, k, v and one write of out (forward; backward reads also out, dout and writes the three
// gradients), tiny next to the FLOPs at head dim 64/128: the kernels are compute-bound.
#include "kernels/attention.h"
#include "kernels/attention_strided.h"

#include "core/cuda_check.h"
#include "core/cuda_runtime.h"
#include "kernels/cuda_errors.h"
#include "kernels/sm90/attention_sm90.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>

namespace sambay {
namespace {

using bf16_t = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

std::atomic<AttentionKernels> g_kernels{AttentionKernels::automatic};

// ---------------------------------------------------------------------------------------------
// PTX helpers.

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; when !valid nothing is read and the 16 bytes are zero-filled.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Four 8x8 bf16 matrices; lane l supplies the address of row (l % 8) of matrix l / 8, and
// receives in r[i] the pair (row l / 4, columns 2 (l % 4), +1) of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16_t* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
// The same with each matrix transposed: r[i] holds (rows 2 (l % 4), +1; column l / 4).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16_t* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}

// d (16x8 fp32) += a (16x16 bf16, row) * b (16x8 bf16, col). Fragments, with g = lane / 4 and
// q = lane % 4: a[0] (row g, k 2q..2q+1), a[1] (row g+8, same k), a[2] (row g, k 2q+8..),
// a[3] (row g+8, k 2q+8..); b0 (k 2q.., column g), b1 (k 2q+8.., column g);
// d[0..1] (row g, columns 2q, 2q+1), d[2..3] (row g+8, same columns).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as a bf16 pair, the first in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return (static_cast<uint32_t>(__bfloat16_as_ushort(v.y)) << 16) | __bfloat16_as_ushort(v.x);
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Loads ROWS x D bf16 (rows row0.. of a strided tensor, rows >= L zero-filled) into shared memory
// with row stride D + 8 elements: consecutive rows start 16 bytes apart modulo 128, so the 8 row
// addresses of every ldmatrix fall in distinct banks.
template <int ROWS, int D, int THREADS>
__device__ __forceinline__ void load_tile(bf16_t* dst, const bf16_t* src, int64_t pos_stride,
                                          int row0, int L, int tid) {
  constexpr int CHUNKS = D / 8;  // 16-byte pieces per row
  constexpr int TOTAL = ROWS * CHUNKS;
#pragma unroll
  for (int it = 0; it < (TOTAL + THREADS - 1) / THREADS; ++it) {
    const int i = it * THREADS + tid;
    if (TOTAL % THREADS == 0 || i < TOTAL) {
      const int r = i / CHUNKS, c = i % CHUNKS;
      const bool valid = row0 + r < L;
      const bf16_t* from = valid ? src + static_cast<int64_t>(row0 + r) * pos_stride + c * 8 : src;
      cp_async_16(dst + r * (D + 8) + c * 8, from, valid);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Parameters shared by the kernels.

struct FwdParams {
  const bf16_t *q, *k, *v;
  void* out;        // bf16 or fp32
  float* lse;       // [B, H, L]
  const int32_t* doc;
  int64_t q_pos, q_head, k_pos, k_head, v_pos, v_head, o_pos, o_head;
  int B, L, H, group, window;  // group = H / G
  float scale_log2;            // scale * log2(e): scores live in the exp2 domain
};

struct BwdParams {
  const bf16_t *q, *k, *v, *dout;
  const float* lse;    // [B, H, L]
  const float* delta;  // [B, H, L]: D = <dout, out> per row
  const int32_t* doc;
  float* dq_acc;       // [B, L, H, dk] fp32, or null (no dq)
  bf16_t *dq, *dk, *dv;  // strided like q, k, v; null skips
  int64_t q_pos, q_head, k_pos, k_head, v_pos, v_head, o_pos, o_head;
  int B, L, H, group, window;
  int dk_dim, dv_dim;
  float scale, scale_log2;
};

// ---------------------------------------------------------------------------------------------
// Forward, tensor cores.

template <int DK, int DV, int WARPS, int MT, int BC>
constexpr size_t fwd_smem_bytes() {
  constexpr int BR = WARPS * 16 * MT;
  return sizeof(bf16_t) * (BR * (DK + 8) + 2 * BC * (DK + 8) + 2 * BC * (DV + 8)) +
         sizeof(int) * (2 * BC + BR);
}

// BC keys are loaded per pipeline stage and consumed in sub-tiles of BS keys: the score
// accumulators (16 * MT x BS per warp) are what must fit in registers next to the output's.
template <int DK, int DV, int WARPS, int MT, int BC, int BS, bool OUT_F32>
__global__ void __launch_bounds__(WARPS * 32, WARPS == 4 ? 2 : 1)
    attention_fwd_kernel(const FwdParams p) {
  constexpr int BR = WARPS * 16 * MT;  // query rows per CTA
  constexpr int THREADS = WARPS * 32;
  constexpr int QS = DK + 8, VS = DV + 8;
  constexpr int NT = BS / 8;  // n8 tiles of scores per m16 tile
  constexpr int OT = DV / 8;  // n8 tiles of output
  static_assert(DK % 16 == 0 && DV % 16 == 0 && BS % 16 == 0 && BC % BS == 0, "tile shapes");
  static_assert(THREADS >= BR && THREADS >= BC, "doc id loads");

  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem);  // [BR][QS]
  bf16_t* sK = sQ + BR * QS;                      // [2][BC][QS]
  bf16_t* sV = sK + 2 * BC * QS;                  // [2][BC][VS]
  int* sDoc = reinterpret_cast<int*>(sV + 2 * BC * VS);  // [2][BC] doc ids of the keys
  int* sDocQ = sDoc + 2 * BC;                             // [BR] doc ids of the queries

  const int h = blockIdx.x, b = blockIdx.y;
  const int m0 = (gridDim.z - 1 - blockIdx.z) * BR;  // the longest rows (last tiles) start first
  const int L = p.L, window = p.window;
  const int kvh = h / p.group;
  const bf16_t* qb = p.q + static_cast<int64_t>(b) * L * p.q_pos + h * p.q_head;
  const bf16_t* kb = p.k + static_cast<int64_t>(b) * L * p.k_pos + kvh * p.k_head;
  const bf16_t* vb = p.v + static_cast<int64_t>(b) * L * p.v_pos + kvh * p.v_head;
  const int32_t* docb = p.doc ? p.doc + static_cast<int64_t>(b) * L : nullptr;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tq = lane % 4;
  const int wrow = warp * 16 * MT;  // this warp's first row within the tile

  // Keys first_key .. last_row are the union of what the tile's rows see.
  const int last_row = min(m0 + BR - 1, L - 1);
  const int first_key = window > 0 ? max(0, m0 - window + 1) : 0;
  const int n_lo = first_key / BC, n_hi = last_row / BC;

  auto load_kv = [&](int n, int buf) {
    load_tile<BC, DK, THREADS>(sK + buf * BC * QS, kb, p.k_pos, n * BC, L, tid);
    load_tile<BC, DV, THREADS>(sV + buf * BC * VS, vb, p.v_pos, n * BC, L, tid);
    if (docb && tid < BC) {
      const int j = n * BC + tid;
      sDoc[buf * BC + tid] = j < L ? docb[j] : -1;
    }
  };

  load_tile<BR, DK, THREADS>(sQ, qb, p.q_pos, m0, L, tid);
  load_kv(n_lo, 0);
  cp_async_commit();
  if (docb && tid < BR) sDocQ[tid] = m0 + tid < L ? docb[m0 + tid] : -1;

  float o[MT][OT][4];
  float m_run[MT][2], l_run[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int i = 0; i < OT; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }

  cp_async_wait_all();
  __syncthreads();

  for (int n = n_lo; n <= n_hi; ++n) {
    const int buf = (n - n_lo) & 1;
    if (n < n_hi) load_kv(n + 1, buf ^ 1);  // overlaps with this tile's math
    cp_async_commit();

#pragma unroll 1
    for (int sub = 0; sub < BC / BS; ++sub) {
      const int k0 = n * BC + sub * BS;  // first key of the sub-tile
      // Sub-tiles that no row of this CTA sees (past the diagonal, before the window).
      if (k0 > last_row || k0 + BS - 1 < first_key) continue;
      const bf16_t* K = sK + (buf * BC + sub * BS) * QS;
      const bf16_t* V = sV + (buf * BC + sub * BS) * VS;
      const int* kdoc = sDoc + buf * BC + sub * BS;

      // S = Q K^T for this warp's 16 * MT rows and the BS keys.
      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < NT; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DK / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          ldmatrix_x4(a[mt],
                      sQ + (wrow + mt * 16 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t bk[4];  // keys np*16 .. +15: [b0, b1] of n-tile 2np, then of 2np+1
          ldmatrix_x4(bk, K + (np * 16 + (lane & 7) + (lane >> 4) * 8) * QS + kk * 16 +
                              ((lane >> 3) & 1) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(s[mt][2 * np], a[mt], bk[0], bk[1]);
            mma_bf16(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
          }
        }
      }

      // Mask (only on sub-tiles crossing the diagonal or the window edge, or under doc
      // masking), then the online softmax update of each row.
      const bool need_mask =
          docb || k0 + BS - 1 > m0 || (window > 0 && k0 <= m0 + BR - 1 - window);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = wrow + mt * 16 + g + 8 * half;  // row within the tile
          const int t = m0 + r;
          float mx = -INFINITY;
#pragma unroll
          for (int i = 0; i < NT; ++i)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float x = s[mt][i][2 * half + e] * p.scale_log2;
              if (need_mask) {
                const int c = i * 8 + 2 * tq + e;  // key within the sub-tile
                const int j = k0 + c;
                const bool visible = j <= t && (window == 0 || j > t - window) &&
                                     (!docb || kdoc[c] == sDocQ[r]);
                if (!visible) x = -INFINITY;
              }
              s[mt][i][2 * half + e] = x;
              mx = fmaxf(mx, x);
            }
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m_run[mt][half], mx);
          // A row that has seen no visible key yet keeps max -inf; exponentiate against 0 then.
          const float m_use = m_new == -INFINITY ? 0.f : m_new;
          const float alpha = fast_exp2(m_run[mt][half] - m_use);
          m_run[mt][half] = m_new;
          float row_sum = 0.f;
#pragma unroll
          for (int i = 0; i < NT; ++i)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float pv = fast_exp2(s[mt][i][2 * half + e] - m_use);
              s[mt][i][2 * half + e] = pv;
              row_sum += pv;
            }
          l_run[mt][half] = l_run[mt][half] * alpha + row_sum;  // this thread's columns only
#pragma unroll
          for (int i = 0; i < OT; ++i) {
            o[mt][i][2 * half] *= alpha;
            o[mt][i][2 * half + 1] *= alpha;
          }
        }
      }

      // O += P V: the score accumulators of n-tiles 2kk, 2kk+1 are exactly the A fragment of
      // the k16 step kk.
#pragma unroll
      for (int kk = 0; kk < BS / 16; ++kk) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < OT / 2; ++dp) {
          uint32_t bv[4];  // value columns dp*16 .. +15 over keys kk*16 .. +15
          ldmatrix_x4_trans(bv, V + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * VS +
                                    dp * 16 + (lane >> 4) * 8);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_bf16(o[mt][2 * dp], a[mt], bv[0], bv[1]);
            mma_bf16(o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
          }
        }
      }
    }

    cp_async_wait_all();
    __syncthreads();
  }

  // Normalise and write out, lse = ln(sum exp(scale * s)) = (max + log2(sum)) * ln 2.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float l = l_run[mt][half];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int t = m0 + wrow + mt * 16 + g + 8 * half;
      if (t >= L) continue;
      const float inv = 1.f / l;  // l >= 1: the row's own key is visible
      const int64_t row = static_cast<int64_t>(b) * L * p.o_pos + t * p.o_pos + h * p.o_head;
#pragma unroll
      for (int i = 0; i < OT; ++i) {
        const int c = i * 8 + 2 * tq;
        const float x0 = o[mt][i][2 * half] * inv, x1 = o[mt][i][2 * half + 1] * inv;
        if constexpr (OUT_F32) {
          *reinterpret_cast<float2*>(static_cast<float*>(p.out) + row + c) = make_float2(x0, x1);
        } else {
          *reinterpret_cast<__nv_bfloat162*>(static_cast<bf16_t*>(p.out) + row + c) =
              __floats2bfloat162_rn(x0, x1);
        }
      }
      if (tq == 0)
        p.lse[(static_cast<int64_t>(b) * p.H + h) * L + t] = (m_run[mt][half] + log2f(l)) * kLn2;
    }
}

// ---------------------------------------------------------------------------------------------
// Backward, tensor cores.

template <int DK, int DV, int KW, int CW, int BR>
constexpr size_t bwd_smem_bytes() {
  constexpr int BC = 16 * KW;
  return sizeof(bf16_t) * (BC * (DK + 8) + BC * (DV + 8) + 2 * BR * (DK + 8) +
                           2 * BR * (DV + 8) + 2 * BC * (BR + 8)) +
         sizeof(float) * 2 * 2 * BR + sizeof(int) * 2 * BR;
}

template <int DK, int DV, int KW, int CW, int BR>
__global__ void __launch_bounds__(KW * CW * 32, 1) attention_bwd_kernel(const BwdParams p) {
  constexpr int BC = 16 * KW;  // keys per CTA: 16 per warp row
  constexpr int WARPS = KW * CW, THREADS = WARPS * 32;
  constexpr int QN = BR / CW;    // query columns of S^T, dP^T per warp
  constexpr int DKN = DK / CW;   // dK columns per warp
  constexpr int DVN = DV / CW;   // dV columns per warp
  constexpr int RG = BR / 16;    // dQ: row groups of 16 queries ...
  constexpr int CG = WARPS / RG; // ... times column groups
  constexpr int DQN = DK / CG;   // dQ columns per warp
  constexpr int QS = DK + 8, VS = DV + 8, PS = BR + 8;
  static_assert(QN % 16 == 0 && DKN % 16 == 0 && DVN % 16 == 0 && DQN % 16 == 0, "warp tiles");
  static_assert(WARPS % RG == 0 && THREADS >= BR && THREADS >= BC, "warp layout");

  extern __shared__ __align__(16) unsigned char smem[];
  bf16_t* sK = reinterpret_cast<bf16_t*>(smem);  // [BC][QS]
  bf16_t* sV = sK + BC * QS;                      // [BC][VS]
  bf16_t* sQ = sV + BC * VS;                      // [2][BR][QS]
  bf16_t* sdO = sQ + 2 * BR * QS;                 // [2][BR][VS]
  bf16_t* sP = sdO + 2 * BR * VS;                 // [BC][PS]  P^T (keys x queries)
  bf16_t* sdS = sP + BC * PS;                     // [BC][PS]  dS^T
  float* sLse = reinterpret_cast<float*>(sdS + BC * PS);  // [2][BR], times log2(e)
  float* sD = sLse + 2 * BR;                              // [2][BR]
  int* sDocQ = reinterpret_cast<int*>(sD + 2 * BR);       // [2][BR]

  const int kvh = blockIdx.x, b = blockIdx.y;
  const int n0 = blockIdx.z * BC;  // key tiles near the start see the most queries: run first
  const int L = p.L, H = p.H, window = p.window;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tq = lane % 4;
  const int kw = warp / CW, cw = warp % CW;
  const int rg = warp % RG, cg = warp / RG;
  const int32_t* docb = p.doc ? p.doc + static_cast<int64_t>(b) * L : nullptr;

  // Queries that see keys n0 .. n0 + BC - 1: from n0 to the end, or to the window's reach.
  const int q_last = window > 0 ? min(L - 1, n0 + BC - 1 + window - 1) : L - 1;
  const int i_lo = n0 / BR, i_hi = q_last / BR;
  const int tiles_per_head = i_hi - i_lo + 1;
  const int total = p.group * tiles_per_head;

  auto load_queries = [&](int it, int buf) {
    const int h = kvh * p.group + it / tiles_per_head;
    const int q0 = (i_lo + it % tiles_per_head) * BR;
    load_tile<BR, DK, THREADS>(sQ + buf * BR * QS,
                               p.q + static_cast<int64_t>(b) * L * p.q_pos + h * p.q_head,
                               p.q_pos, q0, L, tid);
    load_tile<BR, DV, THREADS>(sdO + buf * BR * VS,
                               p.dout + static_cast<int64_t>(b) * L * p.o_pos + h * p.o_head,
                               p.o_pos, q0, L, tid);
    if (tid < BR) {
      const int t = q0 + tid;
      const int64_t r = (static_cast<int64_t>(b) * H + h) * L + t;
      // Rows past the end get lse = +inf, so their P is exactly 0.
      sLse[buf * BR + tid] = t < L ? p.lse[r] * kLog2e : INFINITY;
      sD[buf * BR + tid] = t < L ? p.delta[r] : 0.f;
      sDocQ[buf * BR + tid] = docb && t < L ? docb[t] : -1;
    }
  };

  load_tile<BC, DK, THREADS>(sK, p.k + static_cast<int64_t>(b) * L * p.k_pos + kvh * p.k_head,
                             p.k_pos, n0, L, tid);
  load_tile<BC, DV, THREADS>(sV, p.v + static_cast<int64_t>(b) * L * p.v_pos + kvh * p.v_head,
                             p.v_pos, n0, L, tid);
  load_queries(0, 0);
  cp_async_commit();

  int kdoc[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int j = n0 + kw * 16 + g + 8 * half;
    kdoc[half] = docb && j < L ? docb[j] : -1;
  }

  float dk_acc[DKN / 8][4], dv_acc[DVN / 8][4];
#pragma unroll
  for (int i = 0; i < DKN / 8; ++i) dk_acc[i][0] = dk_acc[i][1] = dk_acc[i][2] = dk_acc[i][3] = 0.f;
#pragma unroll
  for (int i = 0; i < DVN / 8; ++i) dv_acc[i][0] = dv_acc[i][1] = dv_acc[i][2] = dv_acc[i][3] = 0.f;

  cp_async_wait_all();
  __syncthreads();

  for (int it = 0; it < total; ++it) {
    const int buf = it & 1;
    if (it + 1 < total) load_queries(it + 1, buf ^ 1);
    cp_async_commit();
    const int h = kvh * p.group + it / tiles_per_head;
    const int q0 = (i_lo + it % tiles_per_head) * BR;
    const bf16_t* Q = sQ + buf * BR * QS;
    const bf16_t* dO = sdO + buf * BR * VS;
    const float* lse2 = sLse + buf * BR;
    const float* Dq = sD + buf * BR;
    const int* docq = sDocQ + buf * BR;

    // S^T (16 keys of this warp x QN queries) = K Q^T, and dP^T = V dO^T.
    float st[QN / 8][4], dpt[QN / 8][4];
#pragma unroll
    for (int i = 0; i < QN / 8; ++i) {
      st[i][0] = st[i][1] = st[i][2] = st[i][3] = 0.f;
      dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < DK / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, sK + (kw * 16 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < QN / 16; ++np) {
        uint32_t bq[4];
        ldmatrix_x4(bq, Q + (cw * QN + np * 16 + (lane & 7) + (lane >> 4) * 8) * QS + kk * 16 +
                            ((lane >> 3) & 1) * 8);
        mma_bf16(st[2 * np], a, bq[0], bq[1]);
        mma_bf16(st[2 * np + 1], a, bq[2], bq[3]);
      }
    }
#pragma unroll
    for (int kk = 0; kk < DV / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, sV + (kw * 16 + (lane & 15)) * VS + kk * 16 + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < QN / 16; ++np) {
        uint32_t bo[4];
        ldmatrix_x4(bo, dO + (cw * QN + np * 16 + (lane & 7) + (lane >> 4) * 8) * VS + kk * 16 +
                            ((lane >> 3) & 1) * 8);
        mma_bf16(dpt[2 * np], a, bo[0], bo[1]);
        mma_bf16(dpt[2 * np + 1], a, bo[2], bo[3]);
      }
    }

    // P^T = exp(scale s - lse) (0 where masked), dS^T = P^T (dP^T - D); both to shared memory.
    const bool need_mask =
        docb || q0 < n0 + BC - 1 || (window > 0 && n0 <= q0 + BR - 1 - window);
#pragma unroll
    for (int i = 0; i < QN / 8; ++i) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int key = kw * 16 + g + 8 * half;
        const int j = n0 + key;
        float pv[2], ds[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int qc = cw * QN + i * 8 + 2 * tq + e;
          const int t = q0 + qc;
          float x = fast_exp2(st[i][2 * half + e] * p.scale_log2 - lse2[qc]);
          if (need_mask) {
            const bool visible = j <= t && (window == 0 || j > t - window) &&
                                 (!docb || kdoc[half] == docq[qc]);
            if (!visible) x = 0.f;
          }
          pv[e] = x;
          ds[e] = x * (dpt[i][2 * half + e] - Dq[qc]);
        }
        const int off = key * PS + cw * QN + i * 8 + 2 * tq;
        *reinterpret_cast<uint32_t*>(sP + off) = pack_bf16(pv[0], pv[1]);
        *reinterpret_cast<uint32_t*>(sdS + off) = pack_bf16(ds[0], ds[1]);
      }
    }
    __syncthreads();

    // dV += P^T dO and dK += dS^T Q (scale applied at the end), for this warp's 16 keys and
    // column slice, over all BR queries of the tile.
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      uint32_t ap[4], ads[4];
      ldmatrix_x4(ap, sP + (kw * 16 + (lane & 15)) * PS + kk * 16 + (lane >> 4) * 8);
      ldmatrix_x4(ads, sdS + (kw * 16 + (lane & 15)) * PS + kk * 16 + (lane >> 4) * 8);
      const int brow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
      for (int cp = 0; cp < DVN / 16; ++cp) {
        uint32_t bo[4];
        ldmatrix_x4_trans(bo, dO + brow * VS + cw * DVN + cp * 16 + (lane >> 4) * 8);
        mma_bf16(dv_acc[2 * cp], ap, bo[0], bo[1]);
        mma_bf16(dv_acc[2 * cp + 1], ap, bo[2], bo[3]);
      }
#pragma unroll
      for (int cp = 0; cp < DKN / 16; ++cp) {
        uint32_t bq[4];
        ldmatrix_x4_trans(bq, Q + brow * QS + cw * DKN + cp * 16 + (lane >> 4) * 8);
        mma_bf16(dk_acc[2 * cp], ads, bq[0], bq[1]);
        mma_bf16(dk_acc[2 * cp + 1], ads, bq[2], bq[3]);
      }
    }

    // dQ (unscaled) += dS K for 16 queries x DQN columns per warp, added to the fp32 buffer.
    if (p.dq_acc) {
      float dq_part[DQN / 8][4];
#pragma unroll
      for (int i = 0; i < DQN / 8; ++i)
        dq_part[i][0] = dq_part[i][1] = dq_part[i][2] = dq_part[i][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < BC / 16; ++kk) {
        uint32_t a[4];  // dS (queries x keys) read transposed out of dS^T
        ldmatrix_x4_trans(a, sdS + (kk * 16 + (lane & 7) + (lane >> 4) * 8) * PS + rg * 16 +
                                 ((lane >> 3) & 1) * 8);
        const int brow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int cp = 0; cp < DQN / 16; ++cp) {
          uint32_t bk[4];
          ldmatrix_x4_trans(bk, sK + brow * QS + cg * DQN + cp * 16 + (lane >> 4) * 8);
          mma_bf16(dq_part[2 * cp], a, bk[0], bk[1]);
          mma_bf16(dq_part[2 * cp + 1], a, bk[2], bk[3]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int t = q0 + rg * 16 + g + 8 * half;
        if (t >= L) continue;
        float* row = p.dq_acc + ((static_cast<int64_t>(b) * L + t) * H + h) * DK + cg * DQN;
#pragma unroll
        for (int i = 0; i < DQN / 8; ++i)
          atomicAdd(reinterpret_cast<float2*>(row + i * 8 + 2 * tq),
                    make_float2(dq_part[i][2 * half], dq_part[i][2 * half + 1]));
      }
    }

    cp_async_wait_all();
    __syncthreads();
  }

  // dk += scale dK, dv += dV, rounded once.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int j = n0 + kw * 16 + g + 8 * half;
    if (j >= L) continue;
    if (p.dk) {
      bf16_t* row = p.dk + static_cast<int64_t>(b) * L * p.k_pos + j * p.k_pos + kvh * p.k_head +
                    cw * DKN;
#pragma unroll
      for (int i = 0; i < DKN / 8; ++i) {
        __nv_bfloat162* ptr = reinterpret_cast<__nv_bfloat162*>(row + i * 8 + 2 * tq);
        const float2 old = __bfloat1622float2(*ptr);
        *ptr = __floats2bfloat162_rn(old.x + p.scale * dk_acc[i][2 * half],
                                     old.y + p.scale * dk_acc[i][2 * half + 1]);
      }
    }
    if (p.dv) {
      bf16_t* row = p.dv + static_cast<int64_t>(b) * L * p.v_pos + j * p.v_pos + kvh * p.v_head +
                    cw * DVN;
#pragma unroll
      for (int i = 0; i < DVN / 8; ++i) {
        __nv_bfloat162* ptr = reinterpret_cast<__nv_bfloat162*>(row + i * 8 + 2 * tq);
        const float2 old = __bfloat1622float2(*ptr);
        *ptr = __floats2bfloat162_rn(old.x + dv_acc[i][2 * half], old.y + dv_acc[i][2 * half + 1]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward helpers: D = <dout, out> per row, and dq += scale * dq_acc.

template <typename OutT>
__global__ void attention_delta_kernel(const bf16_t* dout, const OutT* out, float* delta,
                                       int64_t o_pos, int64_t o_head, int B, int L, int H,
                                       int dv) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= static_cast<int64_t>(B) * H * L) return;
  const int t = static_cast<int>(row % L);
  const int h = static_cast<int>(row / L % H);
  const int b = static_cast<int>(row / L / H);
  const int64_t base = static_cast<int64_t>(b) * L * o_pos + t * o_pos + h * o_head;
  float acc = 0.f;
  for (int c = lane; c < dv; c += 32)
    acc += __bfloat162float(dout[base + c]) * to_f32(out[base + c]);
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;  // row = (b * H + h) * L + t
}

__global__ void attention_dq_add_kernel(const float* dq_acc, bf16_t* dq, int64_t q_pos,
                                        int64_t q_head, int L, int H, int dk, float scale,
                                        int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % dk);
    const int64_t r = i / dk;  // (b * L + t) * H + h
    const int h = static_cast<int>(r % H);
    const int64_t bt = r / H;  // b * L + t
    bf16_t* dst = dq + bt * q_pos + h * q_head + c;
    *dst = __float2bfloat16_rn(__bfloat162float(*dst) + scale * dq_acc[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Simple kernels: one warp per query row (forward, dq) or per key row (dk, dv), any head dims.

constexpr int kSimpleChunk = 128;  // output columns per pass: 4 per lane

template <typename OutT>
__global__ void attention_fwd_simple_kernel(const FwdParams p, int dk, int dv) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int L = p.L;
  if (row >= static_cast<int64_t>(p.B) * p.H * L) return;
  const int t = static_cast<int>(row % L);
  const int h = static_cast<int>(row / L % p.H);
  const int b = static_cast<int>(row / L / p.H);
  const int kvh = h / p.group;
  const bf16_t* qt = p.q + static_cast<int64_t>(b) * L * p.q_pos + t * p.q_pos + h * p.q_head;
  const bf16_t* kb = p.k + static_cast<int64_t>(b) * L * p.k_pos + kvh * p.k_head;
  const bf16_t* vb = p.v + static_cast<int64_t>(b) * L * p.v_pos + kvh * p.v_head;
  const int32_t* docb = p.doc ? p.doc + static_cast<int64_t>(b) * L : nullptr;
  const int lo = p.window > 0 ? max(0, t - p.window + 1) : 0;
  const int64_t orow = static_cast<int64_t>(b) * L * p.o_pos + t * p.o_pos + h * p.o_head;

  for (int c0 = 0; c0 < dv; c0 += kSimpleChunk) {
    float m = -INFINITY, l = 0.f, acc[kSimpleChunk / 32] = {};
    for (int j = lo; j <= t; ++j) {
      if (docb && docb[j] != docb[t]) continue;
      const bf16_t* kj = kb + static_cast<int64_t>(j) * p.k_pos;
      float sdot = 0.f;
      for (int d = lane; d < dk; d += 32) sdot += __bfloat162float(qt[d]) * __bfloat162float(kj[d]);
      const float x = warp_sum(sdot) * p.scale_log2;
      const float m_new = fmaxf(m, x);
      const float alpha = exp2f(m - m_new), pj = exp2f(x - m_new);
      l = l * alpha + pj;
      m = m_new;
      const bf16_t* vj = vb + static_cast<int64_t>(j) * p.v_pos;
#pragma unroll
      for (int i = 0; i < kSimpleChunk / 32; ++i) {
        const int c = c0 + i * 32 + lane;
        acc[i] = acc[i] * alpha + (c < dv ? pj * __bfloat162float(vj[c]) : 0.f);
      }
    }
#pragma unroll
    for (int i = 0; i < kSimpleChunk / 32; ++i) {
      const int c = c0 + i * 32 + lane;
      if (c < dv) {
        if constexpr (std::is_same_v<OutT, float>)
          static_cast<float*>(p.out)[orow + c] = acc[i] / l;
        else
          static_cast<bf16_t*>(p.out)[orow + c] = __float2bfloat16_rn(acc[i] / l);
      }
    }
    if (c0 == 0 && lane == 0)
      p.lse[(static_cast<int64_t>(b) * p.H + h) * L + t] = (m + log2f(l)) * kLn2;
  }
}

// dq row t of head h: sum over visible keys j of dS_tj k_j (times scale), added into dq.
__global__ void attention_dq_simple_kernel(const BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int L = p.L;
  if (row >= static_cast<int64_t>(p.B) * p.H * L) return;
  const int t = static_cast<int>(row % L);
  const int h = static_cast<int>(row / L % p.H);
  const int b = static_cast<int>(row / L / p.H);
  const int kvh = h / p.group;
  const bf16_t* qt = p.q + static_cast<int64_t>(b) * L * p.q_pos + t * p.q_pos + h * p.q_head;
  const bf16_t* dot_ = p.dout + static_cast<int64_t>(b) * L * p.o_pos + t * p.o_pos + h * p.o_head;
  const bf16_t* kb = p.k + static_cast<int64_t>(b) * L * p.k_pos + kvh * p.k_head;
  const bf16_t* vb = p.v + static_cast<int64_t>(b) * L * p.v_pos + kvh * p.v_head;
  const int32_t* docb = p.doc ? p.doc + static_cast<int64_t>(b) * L : nullptr;
  const float lse2 = p.lse[row] * kLog2e, D = p.delta[row];  // row = (b * H + h) * L + t
  const int lo = p.window > 0 ? max(0, t - p.window + 1) : 0;
  bf16_t* dqt = p.dq + static_cast<int64_t>(b) * L * p.q_pos + t * p.q_pos + h * p.q_head;

  for (int c0 = 0; c0 < p.dk_dim; c0 += kSimpleChunk) {
    float acc[kSimpleChunk / 32] = {};
    for (int j = lo; j <= t; ++j) {
      if (docb && docb[j] != docb[t]) continue;
      const bf16_t* kj = kb + static_cast<int64_t>(j) * p.k_pos;
      const bf16_t* vj = vb + static_cast<int64_t>(j) * p.v_pos;
      float sdot = 0.f, pdot = 0.f;
      for (int d = lane; d < p.dk_dim; d += 32)
        sdot += __bfloat162float(qt[d]) * __bfloat162float(kj[d]);
      for (int c = lane; c < p.dv_dim; c += 32)
        pdot += __bfloat162float(dot_[c]) * __bfloat162float(vj[c]);
      const float pj = exp2f(warp_sum(sdot) * p.scale_log2 - lse2);
      const float ds = pj * (warp_sum(pdot) - D);
#pragma unroll
      for (int i = 0; i < kSimpleChunk / 32; ++i) {
        const int c = c0 + i * 32 + lane;
        if (c < p.dk_dim) acc[i] += ds * __bfloat162float(kj[c]);
      }
    }
#pragma unroll
    for (int i = 0; i < kSimpleChunk / 32; ++i) {
      const int c = c0 + i * 32 + lane;
      if (c < p.dk_dim) dqt[c] = __float2bfloat16_rn(__bfloat162float(dqt[c]) + p.scale * acc[i]);
    }
  }
}

// dk, dv row j of kv head g: sums over every query head of the group and every query that sees j.
__global__ void attention_dkdv_simple_kernel(const BwdParams p) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int L = p.L, G = p.H / p.group;
  if (row >= static_cast<int64_t>(p.B) * G * L) return;
  const int j = static_cast<int>(row % L);
  const int kvh = static_cast<int>(row / L % G);
  const int b = static_cast<int>(row / L / G);
  const bf16_t* kj = p.k + static_cast<int64_t>(b) * L * p.k_pos + j * p.k_pos + kvh * p.k_head;
  const bf16_t* vj = p.v + static_cast<int64_t>(b) * L * p.v_pos + j * p.v_pos + kvh * p.v_head;
  const int32_t* docb = p.doc ? p.doc + static_cast<int64_t>(b) * L : nullptr;
  const int hi = p.window > 0 ? min(L - 1, j + p.window - 1) : L - 1;
  const int width = max(p.dk_dim, p.dv_dim);

  for (int c0 = 0; c0 < width; c0 += kSimpleChunk) {
    float acc_k[kSimpleChunk / 32] = {}, acc_v[kSimpleChunk / 32] = {};
    for (int h = kvh * p.group; h < (kvh + 1) * p.group; ++h) {
      for (int t = j; t <= hi; ++t) {
        if (docb && docb[j] != docb[t]) continue;
        const bf16_t* qt =
            p.q + static_cast<int64_t>(b) * L * p.q_pos + t * p.q_pos + h * p.q_head;
        const bf16_t* dot_ =
            p.dout + static_cast<int64_t>(b) * L * p.o_pos + t * p.o_pos + h * p.o_head;
        const int64_t r = (static_cast<int64_t>(b) * p.H + h) * L + t;
        float sdot = 0.f, pdot = 0.f;
        for (int d = lane; d < p.dk_dim; d += 32)
          sdot += __bfloat162float(qt[d]) * __bfloat162float(kj[d]);
        for (int c = lane; c < p.dv_dim; c += 32)
          pdot += __bfloat162float(dot_[c]) * __bfloat162float(vj[c]);
        const float pj = exp2f(warp_sum(sdot) * p.scale_log2 - p.lse[r] * kLog2e);
        const float ds = pj * (warp_sum(pdot) - p.delta[r]);
#pragma unroll
        for (int i = 0; i < kSimpleChunk / 32; ++i) {
          const int c = c0 + i * 32 + lane;
          if (c < p.dk_dim) acc_k[i] += ds * __bfloat162float(qt[c]);
          if (c < p.dv_dim) acc_v[i] += pj * __bfloat162float(dot_[c]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kSimpleChunk / 32; ++i) {
      const int c = c0 + i * 32 + lane;
      if (p.dk && c < p.dk_dim) {
        bf16_t* dst = p.dk + static_cast<int64_t>(b) * L * p.k_pos + j * p.k_pos +
                      kvh * p.k_head + c;
        *dst = __float2bfloat16_rn(__bfloat162float(*dst) + p.scale * acc_k[i]);
      }
      if (p.dv && c < p.dv_dim) {
        bf16_t* dst = p.dv + static_cast<int64_t>(b) * L * p.v_pos + j * p.v_pos +
                      kvh * p.v_head + c;
        *dst = __float2bfloat16_rn(__bfloat162float(*dst) + acc_v[i]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.

unsigned warp_blocks(int64_t rows, int warps_per_block) {
  return static_cast<unsigned>((rows + warps_per_block - 1) / warps_per_block);
}

bool aligned16(const void* ptr) { return ptr == nullptr || reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// The tensor-core kernels read and write 16-byte (q, k, v, dout) and 4-byte (out, gradients)
// pieces: they need 16-byte aligned bases and strides that are multiples of 8 elements.
bool tensor_core_dims(const AttentionShape& s) {
  return (s.dk == 64 && (s.dv == 64 || s.dv == 128)) || (s.dk == 128 && (s.dv == 128 || s.dv == 256));
}
bool strides_aligned(const AttentionStrides& st) {
  for (int64_t x : {st.q_pos, st.q_head, st.k_pos, st.k_head, st.v_pos, st.v_head, st.o_pos,
                    st.o_head})
    if (x % 8 != 0) return false;
  return true;
}

// The default stream-ordered pool would hand its memory back at every synchronisation; keep it,
// so the backward's per-call buffers cost no fresh mapping.
void keep_pool_memory() {
  static std::atomic<bool> done{false};
  if (done.exchange(true)) return;
  int dev = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&dev));
  cudaMemPool_t pool;
  SAMBAY_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
  uint64_t threshold = UINT64_MAX;
  SAMBAY_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
}

// Dynamic shared memory above 48 KB must be allowed per kernel; the largest L1/shared split lets
// two forward CTAs of up to 103 KB share an SM.
template <typename Kernel>
void configure_smem(Kernel kernel, size_t bytes) {
  SAMBAY_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  SAMBAY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                         int(cudaSharedmemCarveoutMaxShared)));
}

template <int DK, int DV, int WARPS, int MT, int BC, int BS, bool F32>
void launch_fwd(const FwdParams& p, cudaStream_t stream) {
  constexpr int BR = WARPS * 16 * MT;
  constexpr size_t smem = fwd_smem_bytes<DK, DV, WARPS, MT, BC>();
  auto kernel = attention_fwd_kernel<DK, DV, WARPS, MT, BC, BS, F32>;
  configure_smem(kernel, smem);
  const dim3 grid(p.H, p.B, (p.L + BR - 1) / BR);
  kernel<<<grid, WARPS * 32, smem, stream>>>(p);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

template <bool F32>
void dispatch_fwd(const FwdParams& p, int dk, int dv, cudaStream_t stream) {
  // <DK, DV, warps, m16 tiles per warp, keys per stage, keys per sub-tile>: 128 query rows per
  // CTA. Registers and shared memory: see the table at the top of this file.
  if (dk == 64 && dv == 64) return launch_fwd<64, 64, 4, 2, 64, 64, F32>(p, stream);
  if (dk == 64 && dv == 128) return launch_fwd<64, 128, 4, 2, 64, 32, F32>(p, stream);
  if (dk == 128 && dv == 128) return launch_fwd<128, 128, 4, 2, 64, 32, F32>(p, stream);
  return launch_fwd<128, 256, 8, 1, 64, 32, F32>(p, stream);  // dk == 128 && dv == 256
}

template <int DK, int DV, int KW, int CW, int BR>
void launch_bwd(const BwdParams& p, cudaStream_t stream) {
  constexpr int BC = 16 * KW;
  constexpr size_t smem = bwd_smem_bytes<DK, DV, KW, CW, BR>();
  auto kernel = attention_bwd_kernel<DK, DV, KW, CW, BR>;
  configure_smem(kernel, smem);
  const dim3 grid(p.H / p.group, p.B, (p.L + BC - 1) / BC);
  kernel<<<grid, KW * CW * 32, smem, stream>>>(p);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

void dispatch_bwd(const BwdParams& p, cudaStream_t stream) {
  if (p.dk_dim == 64 && p.dv_dim == 64) return launch_bwd<64, 64, 4, 2, 64>(p, stream);
  if (p.dk_dim == 64 && p.dv_dim == 128) return launch_bwd<64, 128, 4, 2, 64>(p, stream);
  if (p.dk_dim == 128 && p.dv_dim == 128) return launch_bwd<128, 128, 4, 2, 64>(p, stream);
  return launch_bwd<128, 256, 4, 2, 64>(p, stream);  // dk == 128 && dv == 256
}

// D = <dout, out> per row, [B, H, L].
void launch_delta(const bf16* dout, const void* out, bool out_f32, float* delta,
                  const AttentionShape& s, const AttentionStrides& st, cudaStream_t stream) {
  const unsigned blocks = warp_blocks(s.B * s.H * s.L, 8);
  if (out_f32)
    attention_delta_kernel<float><<<blocks, 256, 0, stream>>>(
        reinterpret_cast<const bf16_t*>(dout), static_cast<const float*>(out), delta, st.o_pos,
        st.o_head, int(s.B), int(s.L), int(s.H), int(s.dv));
  else
    attention_delta_kernel<bf16_t><<<blocks, 256, 0, stream>>>(
        reinterpret_cast<const bf16_t*>(dout), static_cast<const bf16_t*>(out), delta, st.o_pos,
        st.o_head, int(s.B), int(s.L), int(s.H), int(s.dv));
  SAMBAY_CUDA_CHECK_LAUNCH();
}

// The Hopper kernels (kernels/sm90/) serve every case they cover on an sm_90 device; the
// mma.sync and simple kernels below serve other GPUs, other head dims and unaligned views.
bool use_sm90(const AttentionShape& s, const AttentionStrides& st, bool backward,
              std::initializer_list<const void*> ptrs) {
  if (g_kernels != AttentionKernels::automatic) return false;
  if (backward ? !sm90::attention_sm90_backward_supports(s.dk, s.dv)
               : !sm90::attention_sm90_supports(s.dk, s.dv))
    return false;
  if (!strides_aligned(st)) return false;
  for (const void* p : ptrs)
    if (!aligned16(p)) return false;
  static const bool sm90_device = cuda_compute_capability() == 90;  // sm_90a code runs there
  return sm90_device;
}

sm90::HeadTensor head_tensor(const void* base, int64_t d, int64_t heads, int64_t positions,
                             int64_t B, int64_t pos_stride, int64_t head_stride) {
  return {base, d, heads, positions, B, head_stride, pos_stride, positions * pos_stride};
}

void check_no_query_slice(const AttentionShape& s) {
  SAMBAY_CUDA_ARG_CHECK(attention_keys(s) == s.L && s.q_offset == 0,
                        "attention: query slices (L=" + std::to_string(s.L) +
                            " queries at q_offset=" + std::to_string(s.q_offset) + " over Lk=" +
                            std::to_string(attention_keys(s)) +
                            " keys) need the Hopper kernels: an sm_90 GPU, head dims (64, 64), "
                            "(64, 128), (128, 128) or (128, 256) and 16-byte aligned views");
}

}  // namespace

void attention_cuda_force_kernels(AttentionKernels kernels) { g_kernels = kernels; }

AttentionStrides contiguous_attention_strides(const AttentionShape& s) {
  return {s.H * s.dk, s.dk, s.G * s.dk, s.dk, s.G * s.dv, s.dv, s.H * s.dv, s.dv};
}

void attention_forward_strided_cuda(const bf16* q, const bf16* k, const bf16* v,
                                    const int32_t* doc, void* out, bool out_f32, float* lse,
                                    const AttentionShape& s, const AttentionStrides& st,
                                    float scale, cudaStream_t stream) {
  check_attention_shape(s);
  const int64_t Lk = attention_keys(s);
  if (use_sm90(s, st, false, {q, k, v, out})) {
    sm90::attention_forward_sm90(head_tensor(q, s.dk, s.H, s.L, s.B, st.q_pos, st.q_head),
                                 head_tensor(k, s.dk, s.G, Lk, s.B, st.k_pos, st.k_head),
                                 head_tensor(v, s.dv, s.G, Lk, s.B, st.v_pos, st.v_head), doc, out,
                                 out_f32, st.o_pos, st.o_head, lse, s, scale, stream);
    return;
  }
  check_no_query_slice(s);
  FwdParams p{};
  p.q = reinterpret_cast<const bf16_t*>(q);
  p.k = reinterpret_cast<const bf16_t*>(k);
  p.v = reinterpret_cast<const bf16_t*>(v);
  p.out = out;
  p.lse = lse;
  p.doc = doc;
  p.q_pos = st.q_pos, p.q_head = st.q_head, p.k_pos = st.k_pos, p.k_head = st.k_head;
  p.v_pos = st.v_pos, p.v_head = st.v_head, p.o_pos = st.o_pos, p.o_head = st.o_head;
  p.B = static_cast<int>(s.B), p.L = static_cast<int>(s.L), p.H = static_cast<int>(s.H);
  p.group = static_cast<int>(s.H / s.G);
  // A window covering the whole sequence is full causal attention.
  p.window = s.window >= s.L ? 0 : static_cast<int>(s.window);
  p.scale_log2 = scale * kLog2e;

  const bool fast = g_kernels != AttentionKernels::simple && tensor_core_dims(s) &&
                    strides_aligned(st) && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out);
  if (fast) {
    if (out_f32)
      dispatch_fwd<true>(p, static_cast<int>(s.dk), static_cast<int>(s.dv), stream);
    else
      dispatch_fwd<false>(p, static_cast<int>(s.dk), static_cast<int>(s.dv), stream);
    return;
  }
  const unsigned blocks = warp_blocks(s.B * s.H * s.L, 4);
  if (out_f32)
    attention_fwd_simple_kernel<float>
        <<<blocks, 128, 0, stream>>>(p, static_cast<int>(s.dk), static_cast<int>(s.dv));
  else
    attention_fwd_simple_kernel<bf16_t>
        <<<blocks, 128, 0, stream>>>(p, static_cast<int>(s.dk), static_cast<int>(s.dv));
  SAMBAY_CUDA_CHECK_LAUNCH();
}

void attention_backward_strided_cuda(const bf16* dout, const bf16* q, const bf16* k,
                                     const bf16* v, const int32_t* doc, const void* out,
                                     bool out_f32, const float* lse, bf16* dq, bf16* dk, bf16* dv,
                                     const AttentionShape& s, const AttentionStrides& st,
                                     float scale, cudaStream_t stream) {
  check_attention_shape(s);
  if (!dq && !dk && !dv) return;
  keep_pool_memory();
  const int64_t Lk = attention_keys(s);
  if (use_sm90(s, st, true, {q, k, v, dout, dq, dk, dv})) {
    // Workspace: the fp32 dq tiles (when dq is wanted), then D [B, H, L].
    const int64_t rows = s.B * s.H * s.L;
    const int64_t dq_floats = dq ? sm90::attention_sm90_dq_floats(s) : 0;
    void* ws = nullptr;
    SAMBAY_CUDA_CHECK(cudaMallocAsync(&ws, sizeof(float) * (dq_floats + rows), stream));
    float* dq_acc = static_cast<float*>(ws);
    float* delta = dq_acc + dq_floats;
    if (dq_floats) SAMBAY_CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, sizeof(float) * dq_floats, stream));
    launch_delta(dout, out, out_f32, delta, s, st, stream);
    if (dq || dk || dv)
      sm90::attention_backward_sm90(
          head_tensor(q, s.dk, s.H, s.L, s.B, st.q_pos, st.q_head),
          head_tensor(k, s.dk, s.G, Lk, s.B, st.k_pos, st.k_head),
          head_tensor(v, s.dv, s.G, Lk, s.B, st.v_pos, st.v_head),
          head_tensor(dout, s.dv, s.H, s.L, s.B, st.o_pos, st.o_head), doc, lse, delta,
          dq_floats ? dq_acc : nullptr, dk, dv, s, scale, stream);
    if (dq) sm90::attention_sm90_dq_finish(dq_acc, dq, st.q_pos, st.q_head, s, scale, stream);
    SAMBAY_CUDA_CHECK(cudaFreeAsync(ws, stream));
    return;
  }
  check_no_query_slice(s);
  const bool fast = g_kernels != AttentionKernels::simple && tensor_core_dims(s) &&
                    strides_aligned(st) && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dout) &&
                    aligned16(dq) && aligned16(dk) && aligned16(dv);

  // Workspace: (tensor-core path with dq) the fp32 dq buffer [B, L, H, dk] first, where the
  // allocation's alignment serves its 8-byte atomics, then D [B, H, L].
  const int64_t rows = s.B * s.H * s.L;
  const int64_t dq_elems = fast && dq ? rows * s.dk : 0;
  void* ws = nullptr;
  SAMBAY_CUDA_CHECK(cudaMallocAsync(&ws, sizeof(float) * (dq_elems + rows), stream));
  float* dq_acc = dq_elems ? static_cast<float*>(ws) : nullptr;
  float* delta = static_cast<float*>(ws) + dq_elems;
  if (dq_acc)
    SAMBAY_CUDA_CHECK(cudaMemsetAsync(dq_acc, 0, sizeof(float) * dq_elems, stream));

  launch_delta(dout, out, out_f32, delta, s, st, stream);

  BwdParams p{};
  p.q = reinterpret_cast<const bf16_t*>(q);
  p.k = reinterpret_cast<const bf16_t*>(k);
  p.v = reinterpret_cast<const bf16_t*>(v);
  p.dout = reinterpret_cast<const bf16_t*>(dout);
  p.lse = lse;
  p.delta = delta;
  p.doc = doc;
  p.dq_acc = dq_acc;
  p.dq = reinterpret_cast<bf16_t*>(dq);
  p.dk = reinterpret_cast<bf16_t*>(dk);
  p.dv = reinterpret_cast<bf16_t*>(dv);
  p.q_pos = st.q_pos, p.q_head = st.q_head, p.k_pos = st.k_pos, p.k_head = st.k_head;
  p.v_pos = st.v_pos, p.v_head = st.v_head, p.o_pos = st.o_pos, p.o_head = st.o_head;
  p.B = int(s.B), p.L = int(s.L), p.H = int(s.H), p.group = int(s.H / s.G);
  p.window = s.window >= s.L ? 0 : int(s.window);
  p.dk_dim = int(s.dk), p.dv_dim = int(s.dv);
  p.scale = scale, p.scale_log2 = scale * kLog2e;

  if (fast) {
    dispatch_bwd(p, stream);
    if (dq_acc) {
      const int64_t n = dq_elems;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536));
      attention_dq_add_kernel<<<blocks, 256, 0, stream>>>(dq_acc, p.dq, st.q_pos, st.q_head,
                                                          p.L, p.H, p.dk_dim, scale, n);
      SAMBAY_CUDA_CHECK_LAUNCH();
    }
  } else {
    if (dq) {
      attention_dq_simple_kernel<<<warp_blocks(rows, 4), 128, 0, stream>>>(p);
      SAMBAY_CUDA_CHECK_LAUNCH();
    }
    if (dk || dv) {
      attention_dkdv_simple_kernel<<<warp_blocks(s.B * s.G * s.L, 4), 128, 0, stream>>>(p);
      SAMBAY_CUDA_CHECK_LAUNCH();
    }
  }
  SAMBAY_CUDA_CHECK(cudaFreeAsync(ws, stream));
}

void attention_forward_cuda(const bf16* q, const bf16* k, const bf16* v, const int32_t* doc,
                            bf16* out, float* lse, const AttentionShape& s, float scale,
                            cudaStream_t stream) {
  attention_forward_strided_cuda(q, k, v, doc, out, false, lse, s,
                                 contiguous_attention_strides(s), scale, stream);
}

void attention_backward_cuda(const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                             const int32_t* doc, const bf16* out, const float* lse, bf16* dq,
                             bf16* dk, bf16* dv, const AttentionShape& s, float scale,
                             cudaStream_t stream) {
  attention_backward_strided_cuda(dout, q, k, v, doc, out, false, lse, dq, dk, dv, s,
                                  contiguous_attention_strides(s), scale, stream);
}

}  // namespace sambay
