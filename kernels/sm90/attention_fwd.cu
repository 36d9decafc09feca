// Attention forward on Hopper (sm_90a): persistent, warp-specialised, TMA-fed, wgmma-computed.
//
// A persistent grid (one CTA per SM) walks the work tiles, each a (block of 128 queries, query
// head, batch row), in the order of the tile scheduler below (longest causal rows first). Per
// CTA, 3 warpgroups:
//   producer (warpgroup 0): one thread issues the tensor copies: a tile's Q block, then its K
//     and V tiles of BN keys into rings of kStages buffers, each completing on its `full`
//     barrier and reused once both consumers have arrived on its `empty` barrier (K and V apart:
//     a K buffer is free once the scores are computed, a V buffer once P V is). The next tile's
//     Q is loaded as soon as the consumers' last score GEMM of this one has read Q, so the copies
//     of one tile overlap the end of the previous one.
//   consumers (warpgroups 1 and 2): 64 query rows each. Per key tile: S = Q K^T (wgmma, both
//     operands in shared memory), the mask where the tile crosses an edge, the online softmax in
//     registers, then O += P V (wgmma with P from registers); then the epilogue writes O / l and
//     the log-sum-exp of each row.
// The consumers' schedule: each issues the scores of key tile i together with P V of tile i - 1,
// so the softmax of tile i runs while the tensor cores work, and the two consumers take turns to
// issue ("ping-pong", through named barriers), so that one's softmax also runs under the other's
// GEMMs. (Measured on an H200, docs/performance.md: one tile at a time 406 / 516 TFLOP/s at L
// 4096 / 8192 causal, the pipelined issue alone 412 / 536, with the turns 430 / 555.) Key tiles
// are walked from the last to the first, so the tiles that need the causal mask come first and
// the rest run unmasked. Registers: the producer gives
// its own up (setmaxnreg) so the consumers can hold S (BN/2 fp32) and O (DV/2 fp32) per thread.
//
// FLOPs per visible (query, key) pair: 2 (dk + dv). Bytes: Q, K, V read once per tile (K and V
// once per query block: the L2 serves the repeats), O and lse written once.
#include "kernels/sm90/attention_sm90.h"

#include "core/cuda_check.h"
#include "core/cuda_runtime.h"
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

constexpr int kBlockQ = 128;  // queries per tile: 64 per consumer warpgroup
constexpr int kStages = 2;
constexpr int kThreads = 384;

struct FwdParams {
  CUtensorMap q_map, k_map, v_map;
  void* out;           // bf16 or fp32, [b, t, head, c] at o_pos / o_head strides
  float* lse;          // [B, H, L]
  const int32_t* doc;  // [B, Lk] or null
  int64_t o_pos, o_head;
  int B, L, Lk, H, group, window, q_offset;
  int q_blocks;  // per (head, batch row)
  float scale_log2;
};

// The tile scheduler: CTA c takes tiles c, c + gridDim.x, ... Tile index i is ordered with the
// query blocks outermost, last block first: under the causal mask the longest rows start first and
// the short ones fill the end.
struct Tile {
  int q_block, head, b;
};
__device__ __forceinline__ Tile tile_of(const FwdParams& p, int i) {
  const int per_block = p.H * p.B;
  const int r = i % per_block;
  return {p.q_blocks - 1 - i / per_block, r % p.H, r / p.H};
}

template <int DK, int DV, int BN>
struct FwdLayout {
  static constexpr int q_bytes = kBlockQ * DK * 2;
  static constexpr int k_bytes = BN * DK * 2;
  static constexpr int v_bytes = BN * DV * 2;
  static constexpr int q_off = 0;
  static constexpr int k_off = q_off + q_bytes;
  static constexpr int v_off = k_off + kStages * k_bytes;
  static constexpr int bar_off = v_off + kStages * v_bytes;
  static constexpr int bytes = bar_off + 8 * (2 + 4 * kStages);
  static constexpr int alloc = bytes + 1024;  // room to align the base to 1024 bytes
};

template <int DK, int DV, int BN, bool OUT_F32>
__global__ void __launch_bounds__(kThreads, 1)
    attention_fwd_sm90_kernel(const __grid_constant__ FwdParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Layout = FwdLayout<DK, DV, BN>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024 - smem_addr(smem_raw) % 1024) % 1024);
  uint8_t* sQ = smem + Layout::q_off;
  uint8_t* sK = smem + Layout::k_off;
  uint8_t* sV = smem + Layout::v_off;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Layout::bar_off);
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + 1;
  uint64_t* k_full = bars + 2;
  uint64_t* v_full = bars + 2 + kStages;
  uint64_t* k_empty = bars + 2 + 2 * kStages;
  uint64_t* v_empty = bars + 2 + 3 * kStages;

  const int tiles_total = p.q_blocks * p.H * p.B;
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    barrier_init(q_full, 1);
    barrier_init(q_empty, 8);  // one arrival per consumer warp
    for (int s = 0; s < kStages; ++s) {
      barrier_init(&k_full[s], 1);
      barrier_init(&v_full[s], 1);
      barrier_init(&k_empty[s], 8);
      barrier_init(&v_empty[s], 8);
    }
    barrier_init_fence();
  }
  __syncthreads();

  if (warpgroup == 0) {
    release_registers<24>();
    if (threadIdx.x != 0) return;
    int kv = 0;  // key tiles loaded so far: stage kv % kStages, pass kv / kStages
    int n_q = 0;
    for (int i = blockIdx.x; i < tiles_total; i += gridDim.x, ++n_q) {
      const Tile tile = tile_of(p, i);
      const int t0 = tile.q_block * kBlockQ, kv_head = tile.head / p.group;
      const AttentionMask mask{p.L, p.Lk, p.q_offset, p.window, nullptr};
      const int first = mask.first_key_tile(t0, BN), end = mask.end_key_tile(t0, kBlockQ, BN);
      barrier_wait(q_empty, (n_q & 1) ^ 1);
      barrier_arrive_expect(q_full, Layout::q_bytes);
#pragma unroll
      for (int c = 0; c < DK / 64; ++c)
        tma_load_4d(sQ + c * kBlockQ * 128, &p.q_map, q_full, c * 64, tile.head, t0, tile.b);
      for (int n = end - 1; n >= first; --n, ++kv) {
        const int s = kv % kStages;
        const uint32_t parity = ((kv / kStages) & 1) ^ 1;
        barrier_wait(&k_empty[s], parity);
        barrier_arrive_expect(&k_full[s], Layout::k_bytes);
#pragma unroll
        for (int c = 0; c < DK / 64; ++c)
          tma_load_4d(sK + s * Layout::k_bytes + c * BN * 128, &p.k_map, &k_full[s], c * 64,
                      kv_head, n * BN, tile.b);
        barrier_wait(&v_empty[s], parity);
        barrier_arrive_expect(&v_full[s], Layout::v_bytes);
#pragma unroll
        for (int c = 0; c < DV / 64; ++c)
          tma_load_4d(sV + s * Layout::v_bytes + c * BN * 128, &p.v_map, &v_full[s], c * 64,
                      kv_head, n * BN, tile.b);
      }
    }
    return;
  }

  // ---- consumers ----
  claim_registers<240>();
  const int wg = warpgroup - 1;  // rows 64 wg .. of each tile
  const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32;
  const int row_in_tile = 64 * wg + 16 * warp + lane / 4;  // this thread's rows: +0, +8
  const int col_in_tile = 2 * (lane % 4);                  // + 8 j (+1)
  const uint32_t q_base = smem_addr(sQ) + wg * 64 * 128;
  // Ping-pong: warpgroup w issues after waiting on barrier 1 + w, then lets the other go.
  auto wait_turn = [&] { named_barrier_sync(1 + wg, 256); };
  auto pass_turn = [&] { named_barrier_arrive(1 + (1 - wg), 256); };
  if (wg == 1) named_barrier_arrive(1, 256);  // warpgroup 0 issues first

  int kv = 0;  // key tiles consumed so far, as the producer counts them
  int n_q = 0;
  for (int tile_i = blockIdx.x; tile_i < tiles_total; tile_i += gridDim.x, ++n_q) {
    const Tile tile = tile_of(p, tile_i);
    const int t0 = tile.q_block * kBlockQ;
    const int wg_t0 = t0 + 64 * wg;
    const int row0 = t0 + row_in_tile;
    const AttentionMask mask{p.L, p.Lk, p.q_offset, p.window,
                             p.doc ? p.doc + static_cast<int64_t>(tile.b) * p.Lk : nullptr};
    const int first = mask.first_key_tile(t0, BN), end = mask.end_key_tile(t0, kBlockQ, BN);
    const int tiles = end - first;
    const int kv0 = kv;  // key tile i of this block is the producer's kv0 + i
    const int32_t doc_r[2] = {mask.query_doc(row0), mask.query_doc(row0 + 8)};

    float o[DV / 2];
#pragma unroll
    for (int i = 0; i < DV / 2; ++i) o[i] = 0.f;
    OnlineSoftmax<BN> softmax;

    auto issue_scores = [&](int i, float (&sc)[BN / 2]) {  // S = Q K^T, asynchronous
      const int s = (kv0 + i) % kStages;
      barrier_wait(&k_full[s], ((kv0 + i) / kStages) & 1);
      const uint32_t k_base = smem_addr(sK + s * Layout::k_bytes);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < DK / 16; ++k) {
        const uint32_t in_row = (k % 4) * 32, block = k / 4;
        Wgmma<BN>::template ss<0, 0>(sc,
                                     smem_desc(q_base + block * kBlockQ * 128 + in_row, 16, 1024),
                                     smem_desc(k_base + block * BN * 128 + in_row, 16, 1024), k > 0);
      }
      wgmma_commit();
    };
    auto mask_scores = [&](int i, float (&sc)[BN / 2]) {
      const int j0 = (end - 1 - i) * BN;
      if (mask.full(wg_t0, 64, j0, BN)) return;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = e / 2;
          const int key = j0 + 8 * j + col_in_tile + (e % 2);
          const int t = row0 + 8 * r;
          if (!mask.in_band(t, key) || mask.key_doc(key) != doc_r[r]) sc[4 * j + e] = -INFINITY;
        }
    };
    auto issue_values = [&](int i, uint32_t (&pa)[BN / 16][4]) {  // O += P V, asynchronous
      const int s = (kv0 + i) % kStages;
      barrier_wait(&v_full[s], ((kv0 + i) / kStages) & 1);
      const uint32_t v_base = smem_addr(sV + s * Layout::v_bytes);
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < BN / 16; ++k)
        Wgmma<DV>::template rs<1>(o, pa[k], smem_desc(v_base + k * 16 * 128, BN * 128, 1024), 1);
      wgmma_commit();
    };
    // A warp's reads of a buffer are over once its GEMMs on it have completed.
    auto release_keys = [&](int i) {
      if (lane == 0) barrier_arrive(&k_empty[(kv0 + i) % kStages]);
      if (i == tiles - 1 && lane == 0) barrier_arrive(q_empty);  // the last read of Q
    };
    auto release_values = [&](int i) {
      if (lane == 0) barrier_arrive(&v_empty[(kv0 + i) % kStages]);
    };

    barrier_wait(q_full, n_q & 1);
    // Software-pipelined: the scores of key tile i are computed while P V of tile i - 1 runs,
    // and the softmax of tile i overlaps that product.
    uint32_t pa[BN / 16][4];
    {
      float sc[BN / 2];
      wait_turn();
      issue_scores(0, sc);
      pass_turn();
      wgmma_wait<0>();
      fence_registers(sc);
      release_keys(0);
      mask_scores(0, sc);
      float rescale[2];
      softmax.update(sc, p.scale_log2, rescale);
      to_a_fragments<BN>(sc, pa);
    }
    for (int i = 1; i < tiles; ++i) {
      float sc[BN / 2];
      wait_turn();
      issue_scores(i, sc);
      issue_values(i - 1, pa);
      pass_turn();
      wgmma_wait<1>();  // the scores are in
      fence_registers(sc);
      release_keys(i);
      mask_scores(i, sc);
      float rescale[2];
      softmax.update(sc, p.scale_log2, rescale);
      wgmma_wait<0>();  // P V of tile i - 1 is done: its buffers and P's registers are free
      fence_registers(o);
      fence_registers(pa);
      release_values(i - 1);
      scale_rows(o, rescale);
      to_a_fragments<BN>(sc, pa);
    }
    issue_values(tiles - 1, pa);
    wgmma_wait<0>();
    fence_registers(o);
    fence_registers(pa);
    release_values(tiles - 1);
    kv += tiles;

    // ---- epilogue: O / l and lse ----
    float inv[2], lse[2];
    softmax.finish(inv, lse);
    const int64_t row_base = static_cast<int64_t>(tile.b) * p.L;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int t = row0 + 8 * r;
      if (t >= p.L) continue;
      const int64_t o_row = (row_base + t) * p.o_pos + static_cast<int64_t>(tile.head) * p.o_head;
#pragma unroll
      for (int j = 0; j < DV / 8; ++j) {
        const float x0 = o[4 * j + 2 * r] * inv[r], x1 = o[4 * j + 2 * r + 1] * inv[r];
        const int64_t idx = o_row + 8 * j + col_in_tile;
        if constexpr (OUT_F32) {
          *reinterpret_cast<float2*>(static_cast<float*>(p.out) + idx) = make_float2(x0, x1);
        } else {
          *reinterpret_cast<uint32_t*>(static_cast<__nv_bfloat16*>(p.out) + idx) =
              pack_bf16x2(x0, x1);
        }
      }
      if (lane % 4 == 0)
        p.lse[(static_cast<int64_t>(tile.b) * p.H + tile.head) * p.L + t] = lse[r];
    }
  }
#else
  __trap();  // built for another architecture: the launcher runs this only on sm_90
#endif
}

template <int DK, int DV, int BN, bool OUT_F32>
void launch(const FwdParams& p, cudaStream_t stream) {
  using Layout = FwdLayout<DK, DV, BN>;
  auto kernel = attention_fwd_sm90_kernel<DK, DV, BN, OUT_F32>;
  static int sms = 0;  // one attribute call per instantiation
  if (sms == 0) {
    SAMBAY_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           Layout::alloc));
    int dev = 0;
    SAMBAY_CUDA_CHECK(cudaGetDevice(&dev));
    SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  }
  const int tiles = p.q_blocks * p.H * p.B;
  kernel<<<std::min(tiles, sms), kThreads, Layout::alloc, stream>>>(p);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

template <bool OUT_F32>
void dispatch(const FwdParams& p, int dk, int dv, cudaStream_t stream) {
  if (dk == 64 && dv == 64) return launch<64, 64, 128, OUT_F32>(p, stream);
  if (dk == 64 && dv == 128) return launch<64, 128, 128, OUT_F32>(p, stream);
  if (dk == 128 && dv == 128) return launch<128, 128, 128, OUT_F32>(p, stream);
  return launch<128, 256, 64, OUT_F32>(p, stream);
}

}  // namespace

bool attention_sm90_supports(int64_t dk, int64_t dv) {
  return (dk == 64 && (dv == 64 || dv == 128)) || (dk == 128 && (dv == 128 || dv == 256));
}

void attention_forward_sm90(const HeadTensor& q, const HeadTensor& k, const HeadTensor& v,
                            const int32_t* doc, void* out, bool out_f32, int64_t o_pos,
                            int64_t o_head, float* lse, const AttentionShape& s, float scale,
                            cudaStream_t stream) {
  FwdParams p{};
  const int bn = s.dv == 256 ? 64 : 128;
  p.q_map = make_head_tensor_map(q, kBlockQ, "attention q");
  p.k_map = make_head_tensor_map(k, bn, "attention k");
  p.v_map = make_head_tensor_map(v, bn, "attention v");
  p.out = out;
  p.lse = lse;
  p.doc = doc;
  p.o_pos = o_pos, p.o_head = o_head;
  p.B = int(s.B), p.L = int(s.L), p.Lk = int(attention_keys(s)), p.H = int(s.H);
  p.group = int(s.H / s.G);
  p.window = s.window >= attention_keys(s) ? 0 : int(s.window);
  p.q_offset = int(s.q_offset);
  p.q_blocks = int((s.L + kBlockQ - 1) / kBlockQ);
  p.scale_log2 = scale * 1.4426950408889634f;
  if (out_f32)
    dispatch<true>(p, int(s.dk), int(s.dv), stream);
  else
    dispatch<false>(p, int(s.dk), int(s.dv), stream);
}

}  // namespace sambay::sm90
