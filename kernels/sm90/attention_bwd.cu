// Attention backward on Hopper (sm_90a): warp-specialised, TMA-fed, wgmma-computed.
//
// One CTA per (block of keys, key/value head, batch row) keeps dK and dV of its keys in registers
// while it walks every query head of its GQA group and every block of 64 queries that sees its
// keys. 3 warpgroups:
//   producer (warpgroup 0): warp 0 copies K and V once and, per step, the Q and dO tiles (TMA)
//     into a 2-stage ring; warp 1 copies the step's lse (times log2 e; +inf past the last query,
//     which zeroes those probabilities) and D = <dout, out> into shared memory; warp 2 adds the
//     staged dQ tiles into the dq workspace (below);
//   consumers (warpgroups 1 and 2), per step
//     S^T = K Q^T and dP^T = V dO^T           (wgmma, shared-memory operands)
//     P^T = exp2(S^T scale log2e - lse), dS^T = P^T (dP^T - D)     (registers; mask on edges)
//     dV += P^T dO, dK += dS^T Q              (wgmma, P^T and dS^T from registers)
//     dS^T to shared memory, then dQ_tile = dS K, staged in fp32 and added to the dq workspace by
//     one bulk reduction (cp.reduce.async.bulk .add.f32): dQ costs one asynchronous add per tile,
//     not per element, and the consumers do not wait for it.
//   How the consumers share the keys (BwdShape): with dv <= 128 the CTA has 128 keys, 64 per
//   warpgroup, and each warpgroup adds its own keys' share of dQ (a whole 64 x dk tile, staged
//   and added on its own), so the two never wait for each other and one's softmax runs under
//   the other's products; with dv = 256 (differential attention's values) 64 keys shared by
//   both, which split the value columns (dV, and dP's reduction, exchanged in shared memory) and
//   the key columns (dK, dQ).
// Without dq wanted the consumers skip dS^T's staging and the dQ product.
// The dq workspace holds each 64 x dk tile in the order the accumulators sit in registers
// (16-byte stores without bank conflicts); attention_sm90_dq_finish puts it back in place.
// dK and dV sum in registers in a fixed order; dQ's tile additions arrive in any order (fp32
// adds: the bits of dq may differ between runs in the last place before its bf16 rounding).
//
// FLOPs per visible (query, key) pair: 2 (3 dk + 2 dv) (S, dP, dV, dK, dQ); dv = 256 computes S
// and the softmax in both warpgroups (2 dk more).
#include "kernels/sm90/attention_sm90.h"

#include "core/cuda_check.h"
#include "kernels/cuda_errors.h"
#include "kernels/sm90/attention_mask.cuh"
#include "kernels/sm90/attention_softmax.cuh"
#include "kernels/sm90/pipeline.cuh"
#include "kernels/sm90/wgmma.cuh"

#include <cuda_bf16.h>

#include <algorithm>
#include <string>

namespace sambay::sm90 {
namespace {

constexpr int kBlockQ = 64;  // queries per step
constexpr int kStages = 2;
constexpr int kThreads = 384;
constexpr float kLog2e = 1.4426950408889634f;

struct BwdParams {
  CUtensorMap q_map, k_map, v_map, do_map;
  const float* lse;    // [B, H, L]
  const float* delta;  // [B, H, L]
  float* dq_acc;       // [B, H, ceil(L / 64), 64 * dk] in register order, or null (no dq)
  __nv_bfloat16 *dk, *dv;  // added into; k's and v's layouts; may be null
  const int32_t* doc;      // [B, Lk] or null
  int64_t k_pos, k_head, v_pos, v_head;
  int L, Lk, H, group, window, q_offset;
  float scale, scale_log2;
};

// Two ways to share a CTA's keys between the consumer warpgroups:
//   split keys (dv <= 128): 128 keys, each warpgroup owns 64 with dK and dV whole;
//   wide (dv = 256, differential attention's values): 64 keys shared by both warpgroups, which
//     split the value columns (dV, and dP's reduction over them, exchanged in shared memory) and
//     the key columns (dK, dQ); both form P and dS. dV of 64 keys x 256 columns would not fit one
//     warpgroup's registers beside dK.
template <int DK, int DV>
struct BwdShape {
  static constexpr bool wide = DV == 256;
  static constexpr int keys = wide ? 64 : 128;          // per CTA
  static constexpr int dv_cols = wide ? DV / 2 : DV;    // dV columns per warpgroup
  static constexpr int dk_cols = wide ? DK / 2 : DK;    // dK columns per warpgroup
  // dQ partial tiles per step, each staged in its own buffer and added by its own writer warp:
  // split keys, one per warpgroup (its keys' share of the whole tile, so the warpgroups never
  // wait for each other); wide, one for both (each writes its columns).
  static constexpr int dq_buffers = wide ? 1 : 2;
  static constexpr int dq_writers = wide ? 8 : 4;  // consumer warps arriving on a buffer
};

template <int DK, int DV>
struct BwdLayout {
  using Shape = BwdShape<DK, DV>;
  static constexpr int k_bytes = Shape::keys * DK * 2;
  static constexpr int v_bytes = Shape::keys * DV * 2;
  static constexpr int q_bytes = kBlockQ * DK * 2;
  static constexpr int do_bytes = kBlockQ * DV * 2;
  static constexpr int ds_bytes = Shape::keys * kBlockQ * 2;
  static constexpr int dq_bytes = kBlockQ * DK * 4;
  static constexpr int x_bytes = Shape::wide ? 2 * 64 * kBlockQ * 4 : 0;  // dP^T halves
  static constexpr int k_off = 0;
  static constexpr int v_off = k_off + k_bytes;
  static constexpr int q_off = v_off + v_bytes;
  static constexpr int do_off = q_off + kStages * q_bytes;
  static constexpr int ds_off = do_off + kStages * do_bytes;
  static constexpr int dq_off = ds_off + ds_bytes;
  static constexpr int x_off = dq_off + Shape::dq_buffers * dq_bytes;
  static constexpr int lse_off = x_off + x_bytes;
  static constexpr int delta_off = lse_off + kStages * kBlockQ * 4;
  static constexpr int bar_off = delta_off + kStages * kBlockQ * 4;
  static constexpr int bytes = bar_off + 8 * (1 + 2 * kStages + 2 * Shape::dq_buffers);
  static constexpr int alloc = bytes + 1024;
  static_assert(alloc <= 227 * 1024, "shared memory");
};

// Byte offset of element (row, col) in a 128-byte swizzled tile of 64-column rows.
__device__ __forceinline__ uint32_t swizzled(int row, int col) {
  return row * 128 + ((((col * 2) >> 4) ^ (row & 7)) << 4) + ((col * 2) & 15);
}

template <int DK, int DV>
__global__ void __launch_bounds__(kThreads, 1)
    attention_bwd_sm90_kernel(const __grid_constant__ BwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = BwdShape<DK, DV>;
  using Layout = BwdLayout<DK, DV>;
  constexpr int kKeys = Shape::keys;
  constexpr int kBuffers = Shape::dq_buffers;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  uint8_t* sK = smem + Layout::k_off;
  uint8_t* sV = smem + Layout::v_off;
  uint8_t* sQ = smem + Layout::q_off;
  uint8_t* sdO = smem + Layout::do_off;
  uint8_t* sdS = smem + Layout::ds_off;
  float* sdQ = reinterpret_cast<float*>(smem + Layout::dq_off);
  float* sX = reinterpret_cast<float*>(smem + Layout::x_off);
  float* sLse = reinterpret_cast<float*>(smem + Layout::lse_off);
  float* sDelta = reinterpret_cast<float*>(smem + Layout::delta_off);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Layout::bar_off);
  uint64_t* kv_full = bars;
  uint64_t* q_full = bars + 1;
  uint64_t* q_empty = bars + 1 + kStages;
  uint64_t* dq_full = bars + 1 + 2 * kStages;              // a staged dQ tile is ready to add
  uint64_t* dq_empty = bars + 1 + 2 * kStages + kBuffers;  // its buffer has been read

  const int key_block = blockIdx.x, kv_head = blockIdx.y, b = blockIdx.z;
  const int j0 = key_block * kKeys;
  const AttentionMask mask{p.L, p.Lk, p.q_offset, p.window,
                           p.doc ? p.doc + static_cast<int64_t>(b) * p.Lk : nullptr};
  const int first_q = mask.first_query_tile(j0, kBlockQ);
  const int end_q = mask.end_query_tile(j0, kKeys, kBlockQ);
  const int per_head = end_q > first_q ? end_q - first_q : 0;
  const int steps = per_head * p.group;
  const int q_tiles = (p.L + kBlockQ - 1) / kBlockQ;

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    barrier_init(kv_full, 1);
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&q_full[s], 1 + 32);  // the copy issuer, and the 32 lanes of the lse warp
      barrier_init(&q_empty[s], 8);      // one arrival per consumer warp
    }
    for (int s = 0; s < kBuffers; ++s) {
      barrier_init(&dq_full[s], Shape::dq_writers);
      barrier_init(&dq_empty[s], 1);  // its dQ writer warp
    }
    barrier_init_fence();
  }
  __syncthreads();
  if (steps == 0) return;  // no query sees these keys: dk, dv get nothing

  if (warpgroup == 0) {
    release_registers<24>();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 0 && lane == 0) {
      barrier_arrive_expect(kv_full, Layout::k_bytes + Layout::v_bytes);
#pragma unroll
      for (int c = 0; c < DK / 64; ++c)
        tma_load_4d(sK + c * kKeys * 128, &p.k_map, kv_full, c * 64, kv_head, j0, b);
#pragma unroll
      for (int c = 0; c < DV / 64; ++c)
        tma_load_4d(sV + c * kKeys * 128, &p.v_map, kv_full, c * 64, kv_head, j0, b);
      for (int i = 0; i < steps; ++i) {
        const int s = i % kStages;
        const int head = kv_head * p.group + i / per_head;
        const int t0 = (first_q + i % per_head) * kBlockQ;
        barrier_wait(&q_empty[s], ((i / kStages) & 1) ^ 1);
        barrier_arrive_expect(&q_full[s], Layout::q_bytes + Layout::do_bytes);
#pragma unroll
        for (int c = 0; c < DK / 64; ++c)
          tma_load_4d(sQ + s * Layout::q_bytes + c * kBlockQ * 128, &p.q_map, &q_full[s], c * 64,
                      head, t0, b);
#pragma unroll
        for (int c = 0; c < DV / 64; ++c)
          tma_load_4d(sdO + s * Layout::do_bytes + c * kBlockQ * 128, &p.do_map, &q_full[s],
                      c * 64, head, t0, b);
      }
    } else if (warp >= 2 && warp - 2 < kBuffers && lane == 0 && p.dq_acc != nullptr) {
      // A dQ writer: adds its buffer's staged tile into the workspace with one bulk reduction
      // per step.
      const int buf = warp - 2;
      for (int i = 0; i < steps; ++i) {
        const int head = kv_head * p.group + i / per_head;
        const int q_tile = first_q + i % per_head;
        barrier_wait(&dq_full[buf], i & 1);
        const int64_t tile = (static_cast<int64_t>(b) * p.H + head) * q_tiles + q_tile;
        bulk_reduce_add_f32(p.dq_acc + tile * kBlockQ * DK, sdQ + buf * kBlockQ * DK,
                            Layout::dq_bytes);
        bulk_commit();
        bulk_wait_read();
        barrier_arrive(&dq_empty[buf]);
      }
      bulk_wait();  // complete before the CTA ends
    } else if (warp == 1) {
      for (int i = 0; i < steps; ++i) {
        const int s = i % kStages;
        const int head = kv_head * p.group + i / per_head;
        const int t0 = (first_q + i % per_head) * kBlockQ;
        const int64_t row = (static_cast<int64_t>(b) * p.H + head) * p.L;
        barrier_wait(&q_empty[s], ((i / kStages) & 1) ^ 1);
#pragma unroll
        for (int e = lane; e < kBlockQ; e += 32) {
          const int t = t0 + e;
          sLse[s * kBlockQ + e] = t < p.L ? __ldg(p.lse + row + t) * kLog2e : INFINITY;
          sDelta[s * kBlockQ + e] = t < p.L ? __ldg(p.delta + row + t) : 0.f;
        }
        barrier_arrive(&q_full[s]);
      }
    }
    return;
  }

  // ---- consumers ----
  claim_registers<240>();
  const int wg = warpgroup - 1;
  const int tid = threadIdx.x - 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int wg_keys = Shape::wide ? 0 : 64 * wg;  // this warpgroup's first key in the CTA's tile
  const int key_row = wg_keys + 16 * warp + lane / 4;  // this thread's keys: key_row, + 8
  const int qcol = 2 * (lane % 4);                     // + 8 j (+1): this thread's queries
  const int32_t doc_k[2] = {mask.key_doc(j0 + key_row), mask.key_doc(j0 + key_row + 8)};

  float dk_acc[Shape::dk_cols / 2], dv_acc[Shape::dv_cols / 2];
#pragma unroll
  for (int i = 0; i < Shape::dk_cols / 2; ++i) dk_acc[i] = 0.f;
#pragma unroll
  for (int i = 0; i < Shape::dv_cols / 2; ++i) dv_acc[i] = 0.f;

  const uint32_t k_base = smem_addr(sK), v_base = smem_addr(sV), ds_base = smem_addr(sdS);
  barrier_wait(kv_full, 0);

  for (int i = 0; i < steps; ++i) {
    const int s = i % kStages;
    const uint32_t phase = (i / kStages) & 1;
    const int t0 = (first_q + i % per_head) * kBlockQ;
    const uint32_t q_base = smem_addr(sQ + s * Layout::q_bytes);
    const uint32_t do_base = smem_addr(sdO + s * Layout::do_bytes);
    barrier_wait(&q_full[s], phase);

    // S^T = K Q^T and dP^T = V dO^T for this warpgroup's 64 keys and the step's 64 queries (wide:
    // dP^T over this warpgroup's half of the value columns).
    float st[32], dpt[32];
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) {
      const uint32_t in_row = (k % 4) * 32, block = k / 4;
      Wgmma<64>::template ss<0, 0>(
          st, smem_desc(k_base + block * kKeys * 128 + wg_keys * 128 + in_row, 16, 1024),
          smem_desc(q_base + block * kBlockQ * 128 + in_row, 16, 1024), k > 0);
    }
    wgmma_commit();
    constexpr int dp_steps = Shape::wide ? DV / 32 : DV / 16;
    const int dp_first = Shape::wide ? wg * dp_steps : 0;
#pragma unroll
    for (int kk = 0; kk < dp_steps; ++kk) {
      const int k = dp_first + kk;
      const uint32_t in_row = (k % 4) * 32, block = k / 4;
      Wgmma<64>::template ss<0, 0>(
          dpt, smem_desc(v_base + block * kKeys * 128 + wg_keys * 128 + in_row, 16, 1024),
          smem_desc(do_base + block * kBlockQ * 128 + in_row, 16, 1024), kk > 0);
    }
    wgmma_commit();

    // P^T = exp2(S^T scale log2e - lse), masked where the tile crosses an edge.
    const float* lse2 = sLse + s * kBlockQ;
    const float* dlt = sDelta + s * kBlockQ;
    const bool full = mask.full(t0, kBlockQ, j0 + wg_keys, 64);
    wgmma_wait<1>();
    fence_registers(st);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 l2 = *reinterpret_cast<const float2*>(lse2 + 8 * j + qcol);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = exp2_approx(fmaf(st[4 * j + e], p.scale_log2, -(e % 2 ? l2.y : l2.x)));
        if (!full) {
          const int t = t0 + 8 * j + qcol + (e % 2), key = j0 + key_row + 8 * (e / 2);
          if (!mask.in_band(t, key) || mask.query_doc(t) != doc_k[e / 2]) x = 0.f;
        }
        st[4 * j + e] = x;
      }
    }
    wgmma_wait<0>();
    fence_registers(dpt);
    if constexpr (Shape::wide) {  // dP^T = the two halves' sum, exchanged in register order
      float* mine = sX + wg * 64 * kBlockQ + ((warp * 8) * 32 + lane) * 4;
      const float* theirs = sX + (1 - wg) * 64 * kBlockQ + ((warp * 8) * 32 + lane) * 4;
      named_barrier_sync(3, 256);  // the previous step's exchange has been read
#pragma unroll
      for (int j = 0; j < 8; ++j)
        *reinterpret_cast<float4*>(mine + j * 128) =
            make_float4(dpt[4 * j], dpt[4 * j + 1], dpt[4 * j + 2], dpt[4 * j + 3]);
      named_barrier_sync(4, 256);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float4 v = *reinterpret_cast<const float4*>(theirs + j * 128);
        dpt[4 * j] += v.x, dpt[4 * j + 1] += v.y, dpt[4 * j + 2] += v.z, dpt[4 * j + 3] += v.w;
      }
    }
    // dS^T = P^T (dP^T - D)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 d = *reinterpret_cast<const float2*>(dlt + 8 * j + qcol);
#pragma unroll
      for (int e = 0; e < 4; ++e)
        dpt[4 * j + e] = st[4 * j + e] * (dpt[4 * j + e] - (e % 2 ? d.y : d.x));
    }
    uint32_t pa[4][4], dsa[4][4];
    to_a_fragments<64>(st, pa);
    to_a_fragments<64>(dpt, dsa);

    // dV += P^T dO, dK += dS^T Q (queries are the reduction dimension: dO, Q MN-major); wide:
    // this warpgroup's value columns 128 wg.. and key columns 64 wg..
    const uint32_t dv_cols0 = Shape::wide ? 2 * wg * kBlockQ * 128 : 0;
    const uint32_t dk_cols0 = Shape::wide ? wg * kBlockQ * 128 : 0;
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < 4; ++k)
      Wgmma<Shape::dv_cols>::template rs<1>(
          dv_acc, pa[k], smem_desc(do_base + dv_cols0 + k * 2048, kBlockQ * 128, 1024), 1);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      Wgmma<Shape::dk_cols>::template rs<1>(
          dk_acc, dsa[k], smem_desc(q_base + dk_cols0 + k * 2048, kBlockQ * 128, 1024), 1);
    wgmma_commit();

    if (p.dq_acc == nullptr) {  // no dq wanted: the step ends with dV and dK
      wgmma_wait<0>();
      fence_registers(dk_acc);
      fence_registers(dv_acc);
      fence_registers(pa);
      fence_registers(dsa);
      if (lane == 0) barrier_arrive(&q_empty[s]);
      continue;
    }

    // dS^T (bf16) to shared memory, rows = keys, for dQ = dS K: split keys, each warpgroup its
    // own rows (read by itself only); wide, the first warpgroup all of them (both read them).
    if (!Shape::wide || wg == 0) {
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          *reinterpret_cast<uint32_t*>(sdS + swizzled(key_row + 8 * r, 8 * j + qcol)) =
              pack_bf16x2(dpt[4 * j + 2 * r], dpt[4 * j + 2 * r + 1]);
      fence_async_shared();
    }
    if constexpr (Shape::wide)
      named_barrier_sync(1, 256);
    else
      named_barrier_sync(5 + wg, 128);

    // dQ: wide, columns 64 wg.. over the 64 shared keys (one partial tile, both warpgroups);
    // split keys, every column over this warpgroup's 64 keys, 64 columns at a time (its own
    // partial tile).
    float* stage0 = sdQ + (Shape::wide ? 0 : wg) * kBlockQ * DK;
    constexpr int col_blocks = Shape::wide ? 1 : DK / 64;
    const int buf = Shape::wide ? 0 : wg;
#pragma unroll
    for (int cb_i = 0; cb_i < col_blocks; ++cb_i) {
      const int cb = Shape::wide ? wg : cb_i;  // dQ columns 64 cb ..
      float dq[32];
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < 4; ++k)
        Wgmma<64>::template ss<1, 1>(
            dq, smem_desc(ds_base + (wg_keys / 16 + k) * 2048, 8192, 1024),
            smem_desc(k_base + cb * kKeys * 128 + (wg_keys / 16 + k) * 2048, kKeys * 128, 1024),
            k > 0);
      wgmma_commit();
      wgmma_wait<0>();  // also the dV and dK products: P's and dS's registers are free
      fence_registers(dq);
      fence_registers(dk_acc);
      fence_registers(dv_acc);
      fence_registers(pa);
      fence_registers(dsa);
      if (cb_i == 0) {
        if (lane == 0) barrier_arrive(&q_empty[s]);
        barrier_wait(&dq_empty[buf], (i & 1) ^ 1);  // the writer has read the last tile
      }
      float* stage = stage0 + (((cb * 4 + warp) * 8) * 32 + lane) * 4;
#pragma unroll
      for (int j = 0; j < 8; ++j)
        *reinterpret_cast<float4*>(stage + j * 128) =
            make_float4(dq[4 * j], dq[4 * j + 1], dq[4 * j + 2], dq[4 * j + 3]);
    }
    fence_async_shared();
    __syncwarp();
    if (lane == 0) barrier_arrive(&dq_full[buf]);
  }

  // ---- epilogue: dK (times scale) and dV added into the bf16 gradients ----
  const int dk_c0 = Shape::wide ? 64 * wg : 0, dv_c0 = Shape::wide ? 128 * wg : 0;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = j0 + key_row + 8 * r;
    if (key >= p.Lk) continue;
    const int64_t krow = static_cast<int64_t>(b) * p.Lk + key;
    if (p.dk) {
      __nv_bfloat16* dst =
          p.dk + krow * p.k_pos + static_cast<int64_t>(kv_head) * p.k_head + dk_c0 + qcol;
#pragma unroll
      for (int j = 0; j < Shape::dk_cols / 8; ++j) {
        __nv_bfloat162* d2 = reinterpret_cast<__nv_bfloat162*>(dst + 8 * j);
        const float2 old = __bfloat1622float2(*d2);
        *d2 = __floats2bfloat162_rn(old.x + p.scale * dk_acc[4 * j + 2 * r],
                                    old.y + p.scale * dk_acc[4 * j + 2 * r + 1]);
      }
    }
    if (p.dv) {
      __nv_bfloat16* dst =
          p.dv + krow * p.v_pos + static_cast<int64_t>(kv_head) * p.v_head + dv_c0 + qcol;
#pragma unroll
      for (int j = 0; j < Shape::dv_cols / 8; ++j) {
        __nv_bfloat162* d2 = reinterpret_cast<__nv_bfloat162*>(dst + 8 * j);
        const float2 old = __bfloat1622float2(*d2);
        *d2 = __floats2bfloat162_rn(old.x + dv_acc[4 * j + 2 * r],
                                    old.y + dv_acc[4 * j + 2 * r + 1]);
      }
    }
  }
#else
  __trap();  // built for another architecture: the launcher runs this only on sm_90
#endif
}

// dq[b, t, h, c] += scale * dq_acc, from the register-order tiles. Two columns per thread.
__global__ void attention_dq_finish_kernel(const float* dq_acc, __nv_bfloat16* dq, int64_t q_pos,
                                           int64_t q_head, int L, int H, int dk, int q_tiles,
                                           float scale, int64_t pairs) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t f = 2 * i;
    const int tile_floats = kBlockQ * dk;
    const int64_t tile = f / tile_floats;
    const int in_tile = static_cast<int>(f % tile_floats);
    const int e = in_tile % 4, lane = (in_tile / 4) % 32, j = (in_tile / 128) % 8;
    const int warp = (in_tile / 1024) % 4, cb = in_tile / 4096;
    const int row = 16 * warp + lane / 4 + 8 * (e / 2);
    const int col = 64 * cb + 8 * j + 2 * (lane % 4);
    const int q_tile = static_cast<int>(tile % q_tiles);
    const int64_t bh = tile / q_tiles;
    const int h = static_cast<int>(bh % H);
    const int64_t b = bh / H;
    const int t = q_tile * kBlockQ + row;
    if (t >= L) continue;
    __nv_bfloat162* d2 =
        reinterpret_cast<__nv_bfloat162*>(dq + (b * L + t) * q_pos + h * q_head + col);
    const float2 old = __bfloat1622float2(*d2);
    *d2 = __floats2bfloat162_rn(old.x + scale * dq_acc[f], old.y + scale * dq_acc[f + 1]);
  }
}

template <int DK, int DV>
void launch(const BwdParams& p, int B, int G, cudaStream_t stream) {
  using Layout = BwdLayout<DK, DV>;
  auto kernel = attention_bwd_sm90_kernel<DK, DV>;
  static bool configured = false;
  if (!configured) {
    SAMBAY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Layout::alloc));
    configured = true;
  }
  constexpr int keys = BwdShape<DK, DV>::keys;
  const dim3 grid((p.Lk + keys - 1) / keys, G, B);
  kernel<<<grid, kThreads, Layout::alloc, stream>>>(p);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool attention_sm90_backward_supports(int64_t dk, int64_t dv) {
  return attention_sm90_supports(dk, dv);
}

int64_t attention_sm90_dq_floats(const AttentionShape& s) {
  return s.B * s.H * ((s.L + kBlockQ - 1) / kBlockQ) * kBlockQ * s.dk;
}

void attention_backward_sm90(const HeadTensor& q, const HeadTensor& k, const HeadTensor& v,
                             const HeadTensor& dout, const int32_t* doc, const float* lse,
                             const float* delta, float* dq_acc, void* dk, void* dv,
                             const AttentionShape& s, float scale, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(attention_sm90_backward_supports(s.dk, s.dv),
                        "attention backward (sm90): head dims " + std::to_string(s.dk) + "/" +
                            std::to_string(s.dv) + " are not supported");
  BwdParams p{};
  const int keys = s.dv == 256 ? BwdShape<128, 256>::keys : BwdShape<128, 128>::keys;
  p.q_map = make_head_tensor_map(q, kBlockQ, "attention q");
  p.k_map = make_head_tensor_map(k, keys, "attention k");
  p.v_map = make_head_tensor_map(v, keys, "attention v");
  p.do_map = make_head_tensor_map(dout, kBlockQ, "attention dout");
  p.lse = lse;
  p.delta = delta;
  p.dq_acc = dq_acc;
  p.dk = static_cast<__nv_bfloat16*>(dk);
  p.dv = static_cast<__nv_bfloat16*>(dv);
  p.doc = doc;
  p.k_pos = k.pos_stride, p.k_head = k.head_stride, p.v_pos = v.pos_stride, p.v_head = v.head_stride;
  p.L = int(s.L), p.Lk = int(attention_keys(s)), p.H = int(s.H), p.group = int(s.H / s.G);
  p.window = s.window >= attention_keys(s) ? 0 : int(s.window);
  p.q_offset = int(s.q_offset);
  p.scale = scale;
  p.scale_log2 = scale * kLog2e;
  if (s.dk == 64 && s.dv == 64) return launch<64, 64>(p, int(s.B), int(s.G), stream);
  if (s.dk == 64 && s.dv == 128) return launch<64, 128>(p, int(s.B), int(s.G), stream);
  if (s.dk == 128 && s.dv == 128) return launch<128, 128>(p, int(s.B), int(s.G), stream);
  launch<128, 256>(p, int(s.B), int(s.G), stream);
}

void attention_sm90_dq_finish(const float* dq_acc, void* dq, int64_t q_pos, int64_t q_head,
                              const AttentionShape& s, float scale, cudaStream_t stream) {
  const int q_tiles = int((s.L + kBlockQ - 1) / kBlockQ);
  const int64_t pairs = attention_sm90_dq_floats(s) / 2;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((pairs + 255) / 256, 65536));
  attention_dq_finish_kernel<<<blocks, 256, 0, stream>>>(
      dq_acc, static_cast<__nv_bfloat16*>(dq), q_pos, q_head, int(s.L), int(s.H), int(s.dk),
      q_tiles, scale, pairs);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace sambay::sm90
