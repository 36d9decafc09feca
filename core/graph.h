// The SambaY model graph, written once for every backend: the layer sequence, its forward, its
// hand-written backward and the recompute of planned layers (docs/model.md has the equations).
// A backend (core/cpu_backend.h: fp32/fp64 on the host, the fp64 reference; core/cuda_backend.h:
// bf16 on one GPU) supplies the ops and the parallel hooks below; the graph decides what runs,
// in which order, on which buffers of the activation plan (core/activations.h).
//
// The layer loop (x: the residual stream, rs: the residual scale of muP++):
//   x_0 = embed(tokens); a = norm1_0(x_0)
//   for each layer i:  x_mid = x_i + rs * mixer_i(a)             (mixer region)
//                      x_{i+1} = x_mid + rs * mlp_i(norm2_i(x_mid)) (MLP region)
//                      a = norm1_{i+1}(x_{i+1})  (the final norm after the last layer)
//   loss = cross_entropy(tied_head(a), targets)
// Each residual add is one op with the norm after it (residual_norm_forward), so the first norm
// of a layer runs at the end of the layer before it.
//
// Parallelism, in Megatron-Core's terms. Tensor parallelism: every mixer and MLP is a region
// whose first products are column-parallel (each rank its heads or channels of the whole input)
// and whose last product is row-parallel (each rank a partial sum of the output). The hooks, each
// a forward/backward pair (Megatron's copy-to / reduce-from the tensor-parallel region, and with
// sequence parallelism gather-from / reduce-scatter-to the sequence-parallel region):
//   region_enter(a): the region's input, whole (sequence parallel: all-gathered rows);
//   region_enter_backward(da): the input gradient summed over the ranks' column-parallel
//     products (all-reduce; sequence parallel: reduce-scatter to this rank's rows);
//   region_exit(out): this rank's rows of the summed output of the region's row-parallel
//     product (all-reduce; sequence parallel: reduce-scatter);
//   region_exit_backward(dres): the residual branch's output gradient rs * dres, whole
//     (sequence parallel: all-gathered rows);
//   linear_forward_tp_sum / linear_backward_tp_sum: Mamba's x_proj, a row-parallel product inside
//     the region whose outputs every rank needs whole at once.
// The linear ops: linear_forward / linear_backward (a product local to the rank),
// row_parallel_linear_forward (its output a partial sum for region_exit), and
// column_parallel_linear_backward (its input gradient a partial sum for region_enter_backward).
// Context parallelism (parallel/context_parallel.h): a rank holds two chunks of every sample,
// run as 2B rows of L / 2; attention queries run per chunk over the sample's gathered keys
// (cp_gather_sequence, cp_reduce_scatter_sequence), RoPE at the chunk's positions, the conv reads
// a halo of the chunk before (cp_conv_halo, cp_return_conv_halo_grad) and the scan carries its
// state across chunks (cp_carry_scan_state, cp_carry_scan_grad).
//
// A backend is a class with public members c (ModelConfig), m (GraphDims), lay (ParamLayout),
// acts (GraphActivations<Act, Stat>), P (parameters: vectors), W (parameters: matrices, the
// compute copy), G (gradients), rows (RowSplit), doc (the
// micro-batch's document ids, or null), and the ops the functions below call; a backend with
// context_parallel set also has cp (the CP group, null for one rank) and the cp_ hooks;
// begin(family)/end() mark the op families a profiler times. Fusions only one backend has
// (the GPU's residual-add-plus-norm, conv-plus-SiLU, gate-plus-norm, bf16-logit loss kept per
// vocabulary chunk, fp32 TP partial sums) live inside its ops; the graph has no backend branch.
#pragma once

#include "core/activations.h"
#include "core/gpu_profile.h"
#include "core/model_graph.h"
#include "core/param_layout.h"
#include "kernels/attention.h"
#include "kernels/diff_attention.h"
#include "kernels/selective_scan.h"
#include "parallel/context_parallel.h"

#include <vector>

namespace sambay {

namespace graph {

// The gradients a selective scan's backward adds into (null: skipped); A: activations, Gd:
// parameter gradients.
template <typename A, typename Gd>
struct ScanGrads {
  A *dx = nullptr, *ddt = nullptr;
  Gd *ddt_bias = nullptr, *dA_log = nullptr;
  A *dB = nullptr, *dC = nullptr;
  Gd* dD = nullptr;
  A* dz = nullptr;
};

// The context-parallel group when the backend runs context parallelism (Be::context_parallel)
// and the group has several ranks; null otherwise. The graph's CP passages are compiled only for
// a backend that has the CP hooks.
template <class Be>
const Communicator* cp_group(const Be& be) {
  if constexpr (Be::context_parallel)
    return be.cp;
  else
    return nullptr;
}

// Attention runs over groups of query rows. Without CP one run covers the micro-batch; under CP
// each of the 2B runs of a chunk's queries is one, over its sample's whole keys, at the chunk's
// position among them.
struct QueryRun {
  int64_t row0;      // first query position (row of [n, .] arrays)
  int64_t sample;    // row of the key arrays
  int64_t rows;      // query rows (B of the call)
  int64_t position;  // absolute position of the first query (q_offset, RoPE)
};

inline std::vector<QueryRun> query_runs(const GraphDims& m, const Communicator* cp) {
  if (!cp) return {{0, 0, m.B, 0}};
  std::vector<QueryRun> runs;
  for (int64_t p = 0; p < m.B; ++p)
    runs.push_back({p * m.L, p / 2, 1, chunk_of(cp->rank, int(p % 2), cp->size) * m.L});
  return runs;
}

// Keys and values an attention layer reads: this rank's own, or under CP the whole samples
// gathered (Lk keys per sample).
template <typename A>
struct AttentionInputs {
  const A *k, *v;
  const int32_t* doc;
  int64_t Lk;  // 0: the queries' own rows
};

template <class Be>
AttentionInputs<typename Be::Act> attention_inputs(Be& be, const typename Be::Act* k,
                                                   const typename Be::Act* v) {
  if constexpr (Be::context_parallel) {
    if (be.cp) {
      auto& acts = be.acts;
      be.cp_gather_sequence(k, acts.k_whole, be.m.Gh);
      be.cp_gather_sequence(v, acts.v_whole, be.m.Gh);
      const int32_t* doc = acts.doc_whole.empty() ? nullptr : acts.doc_whole.data();
      return {acts.k_whole, acts.v_whole, doc, 2 * be.cp->size * be.m.L};
    }
  }
  return {k, v, be.doc, 0};
}

// Under CP the K - 1 positions of the chunk before each run, which the conv reads first; null
// otherwise.
template <class Be>
const typename Be::Act* conv_halo(Be& be, const typename Be::Act* xin) {
  if constexpr (Be::context_parallel)
    if (be.cp) return be.cp_conv_halo(xin);
  return nullptr;
}

inline AttentionShape attention_shape(const GraphDims& m, int64_t window, int64_t Lk,
                                      const QueryRun& r) {
  return {r.rows, m.L, m.H, m.G, m.h, m.h, window, Lk, Lk ? r.position : 0};
}

inline DiffAttentionShape diff_shape(const GraphDims& m, int64_t window, int64_t Lk,
                                     const QueryRun& r) {
  return {r.rows, m.L, m.H, m.G, m.h, window, Lk, Lk ? r.position : 0};
}

// Differential attention's saved buffers (element type S) for the queries from row0 on.
template <typename S>
DiffAttentionSaved saved_from(const DiffAttentionSaved& s, int64_t row0, const GraphDims& m) {
  DiffAttentionSaved r = s;
  r.a1 = static_cast<S*>(s.a1) + row0 * m.Hh, r.a2 = static_cast<S*>(s.a2) + row0 * m.Hh;
  r.lse1 = static_cast<S*>(s.lse1) + row0 * (m.H / 2);
  r.lse2 = static_cast<S*>(s.lse2) + row0 * (m.H / 2);
  r.rstd = static_cast<S*>(s.rstd) + row0 * (m.H / 2);
  return r;
}

// ---- Mamba: in_proj (column-parallel), causal conv + SiLU, x_proj (row-parallel, summed at
// once), dt_proj, the selective scan, out_proj (row-parallel: the region's exit).

template <class Be>
void mamba_forward(Be& be, int layer, LayerActivations<typename Be::Act, typename Be::Stat>& a,
                   const typename Be::Act* in, typename Be::Act* out) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* W = be.W;
  const auto* P = be.P;
  be.begin(OpFamily::projection);
  be.linear_forward(in, W + o.in_proj_w, nullptr, a.xin, m.d, m.E);
  be.linear_forward(in, W + o.in_proj_w + m.E * m.d, nullptr, a.z, m.d, m.E);
  be.end();
  be.begin(OpFamily::conv);
  be.conv_silu_forward(a, conv_halo(be, a.xin), P + o.conv_w, P + o.conv_b);
  be.end();
  be.begin(OpFamily::projection);
  const auto* w_x = W + o.x_proj_w;  // rows: delta (R), B (N), C (N)
  be.linear_forward_tp_sum(a.xs, w_x, m.E, {{a.dl, m.R}, {a.bc, m.N}, {a.cc, m.N}});
  be.linear_forward(a.dl, W + o.dt_proj_w, nullptr, a.dt, m.R, m.E);
  be.end();
  be.begin(OpFamily::scan);
  const auto scan = [&](const ScanCarry<typename Be::Stat>& carry) {
    be.scan_forward(a, P + o.dt_proj_b, P + o.a_log, P + o.d_skip, carry);
  };
  ScanCarry<typename Be::Stat> carried;
  if constexpr (Be::context_parallel) {
    if (be.cp) {
      // Each run scanned from a zero state for its final state and decay, the carried states
      // folded over the chunks; the scan below runs again from each run's carried state.
      ScanCarry<typename Be::Stat> local;
      local.state_out = be.acts.scan_state, local.decay_out = a.scan_decay;
      scan(local);
      be.cp_carry_scan_state(be.acts.scan_state, a.scan_decay, a.scan_state_in);
      carried.state_in = a.scan_state_in;
    }
  }
  scan(carried);
  be.end();
  be.begin(OpFamily::projection);
  be.row_parallel_linear_forward(a.sout, W + o.out_proj_w, nullptr, out, m.E, m.d);
  be.end();
}

template <class Be>
void mamba_backward(Be& be, int layer,
                    const LayerActivations<typename Be::Act, typename Be::Stat>& a,
                    const typename Be::Act* in, const typename Be::Act* dout) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* W = be.W;
  const auto* P = be.P;
  auto* G = be.G;
  auto& g = be.acts.grad;
  be.begin(OpFamily::projection);
  for (auto* buf : {g.dxin, g.dz, g.dxs, g.ddt, g.dsout}) be.zero(buf, m.n * m.E);
  be.zero(g.ddl, m.n * m.R), be.zero(g.dbc, m.n * m.N), be.zero(g.dcc, m.n * m.N);
  be.linear_backward(dout, a.sout, W + o.out_proj_w, g.dsout, G + o.out_proj_w, nullptr, m.E,
                     m.d);
  be.end();
  be.begin(OpFamily::scan);
  const typename Be::Act* dmemory = layer == be.c.memory_layer ? g.dmemory : nullptr;
  ScanGrads<typename Be::Act, typename Be::Grad> grads{
      g.dxs, g.ddt, G + o.dt_proj_b, G + o.a_log, g.dbc, g.dcc, G + o.d_skip, g.dz};
  ScanCarry<typename Be::Stat> carry;
  if constexpr (Be::context_parallel) {
    if (be.cp) {
      // A first pass gives the gradient of each run's carried state from its own outputs; the
      // ranks fold those into the gradient arriving at each run's final state; the second pass
      // computes every gradient with it.
      auto& acts = be.acts;
      be.zero(acts.scan_dstate, m.B * m.E * m.N);
      ScanCarry<typename Be::Stat> local;
      local.state_in = a.scan_state_in, local.dstate_in = acts.scan_dstate;
      be.scan_backward(g.dsout, dmemory, a, P + o.dt_proj_b, P + o.a_log, P + o.d_skip, {}, local);
      be.cp_carry_scan_grad(acts.scan_dstate, a.scan_decay, acts.scan_state);
      carry.state_in = a.scan_state_in, carry.dstate_out = acts.scan_state;
    }
  }
  be.scan_backward(g.dsout, dmemory, a, P + o.dt_proj_b, P + o.a_log, P + o.d_skip, grads, carry);
  be.end();
  be.begin(OpFamily::projection);
  // The gradients of x_proj's outputs, summed over TP (each rank's channels contribute).
  be.linear_backward_tp_sum(g.ddt, a.dl, W + o.dt_proj_w, g.ddl, G + o.dt_proj_w, m.R, m.E,
                            {{g.dbc, m.N}, {g.dcc, m.N}});
  const auto* w_x = W + o.x_proj_w;
  auto* gw_x = G + o.x_proj_w;
  be.linear_backward(g.ddl, a.xs, w_x, g.dxs, gw_x, nullptr, m.E, m.R);
  be.linear_backward(g.dbc, a.xs, w_x + m.R * m.E, g.dxs, gw_x + m.R * m.E, nullptr, m.E, m.N);
  be.linear_backward(g.dcc, a.xs, w_x + (m.R + m.N) * m.E, g.dxs, gw_x + (m.R + m.N) * m.E,
                     nullptr, m.E, m.N);
  be.end();
  be.begin(OpFamily::conv);
  be.conv_silu_backward(g.dxs, a, conv_halo(be, a.xin), P + o.conv_w, P + o.conv_b, g.dxin,
                        G + o.conv_w, G + o.conv_b);
  if constexpr (Be::context_parallel)
    if (be.cp) be.cp_return_conv_halo_grad(g.dxin);
  be.end();
  be.begin(OpFamily::projection);
  const auto* w_in = W + o.in_proj_w;
  be.column_parallel_linear_backward(g.dxin, in, w_in, g.da, G + o.in_proj_w, nullptr, m.d, m.E,
                                     true);
  be.column_parallel_linear_backward(g.dz, in, w_in + m.E * m.d, g.da,
                                     G + o.in_proj_w + m.E * m.d, nullptr, m.d, m.E, false);
  be.end();
}

// ---- Attention (sliding-window, full, and cross-attention reading the kv layer's keys and
// values), plain or differential: q, k, v column-parallel by heads, o row-parallel.

template <class Be>
void attention_forward(Be& be, int layer,
                       LayerActivations<typename Be::Act, typename Be::Stat>& a,
                       const typename Be::Act* in, typename Be::Act* out) {
  using Act = typename Be::Act;
  const ModelConfig& c = be.c;
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* W = be.W;
  const auto* P = be.P;
  const LayerKind kind = c.layers[layer];
  const bool cross = kind == LayerKind::cross_attention;
  const std::vector<QueryRun> runs = query_runs(m, cp_group(be));
  be.begin(OpFamily::projection);
  const auto* w = W + o.qkv_w;
  const auto* b = param_at(P, o.qkv_b);
  be.linear_forward(in, w, b, a.q, m.d, m.Hh);
  const Act* k = a.k;
  const Act* v = a.v;
  if (cross) {
    k = be.acts.layers[c.kv_source_layer].k;
    v = be.acts.layers[c.kv_source_layer].v;
  } else {
    be.linear_forward(in, w + m.Hh * m.d, b ? b + m.Hh : b, a.k, m.d, m.Gh);
    be.linear_forward(in, w + (m.Hh + m.Gh) * m.d, b ? b + m.Hh + m.Gh : b, a.v, m.d, m.Gh);
    if (c.rope)
      for (const QueryRun& r : runs) {
        be.rope_forward(a.q + r.row0 * m.Hh, r.rows, m.H, r.position);
        be.rope_forward(a.k + r.row0 * m.Gh, r.rows, m.G, r.position);
      }
  }
  be.end();
  be.begin(OpFamily::attention);
  const AttentionInputs<Act> kv = attention_inputs(be, k, v);
  const int64_t Lk = kv.Lk ? kv.Lk : m.L;
  const int64_t window = window_of(c, kind);
  for (const QueryRun& r : runs) {
    const Act* q = a.q + r.row0 * m.Hh;
    const Act* kr = kv.k + r.sample * Lk * m.Gh;
    const Act* vr = kv.v + r.sample * Lk * m.Gh;
    const int32_t* doc = kv.doc ? kv.doc + r.sample * Lk : nullptr;
    if (c.differential)
      be.diff_attention_forward(q, kr, vr, doc, layer, a.o + r.row0 * m.Hh,
                                saved_from<typename Be::Stat>(a.diff, r.row0, m),
                                diff_shape(m, window, kv.Lk, r));
    else
      be.attention_forward(q, kr, vr, doc, a.o + r.row0 * m.Hh, a.lse + r.row0 * m.H,
                           attention_shape(m, window, kv.Lk, r));
  }
  be.end();
  be.begin(OpFamily::projection);
  // The output bias joins the sum over TP ranks once.
  const auto* o_b = be.rows.rank == 0 ? param_at(P, o.o_b) : nullptr;
  be.row_parallel_linear_forward(a.o, W + o.o_w, o_b, out, m.Hh, m.d);
  be.end();
}

template <class Be>
void attention_backward(Be& be, int layer,
                        const LayerActivations<typename Be::Act, typename Be::Stat>& a,
                        const typename Be::Act* in, const typename Be::Act* dout) {
  using Act = typename Be::Act;
  const ModelConfig& c = be.c;
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* W = be.W;
  auto* G = be.G;
  auto& g = be.acts.grad;
  const RowSplit& sp = be.rows;
  const LayerKind kind = c.layers[layer];
  const bool cross = kind == LayerKind::cross_attention;
  const bool kv_source = layer == c.kv_source_layer;
  const std::vector<QueryRun> runs = query_runs(m, cp_group(be));
  be.begin(OpFamily::projection);
  be.zero(g.dq, m.n * m.Hh), be.zero(g.do_, m.n * m.Hh);
  // The output bias's gradient: from every row, or under SP from this rank's rows (the
  // whole-tensor gradients of SP ranks are summed over TP after the step's backwards).
  auto* g_ob = param_at(G, o.o_b);
  be.linear_backward(dout, a.o, W + o.o_w, g.do_, G + o.o_w, sp.sp ? nullptr : g_ob, m.Hh, m.d);
  if (sp.sp && g_ob) be.bias_backward(dout + sp.row0 * m.d, g_ob, sp.nr, m.Hh, m.d);
  be.end();
  be.begin(OpFamily::attention);
  const Act* k = cross ? be.acts.layers[c.kv_source_layer].k : a.k;
  const Act* v = cross ? be.acts.layers[c.kv_source_layer].v : a.v;
  // Key/value gradients: cross layers and the kv layer itself add into the shared buffers
  // (zeroed at the start of backward); other self-attention layers use their own.
  Act* dk = (cross || kv_source) ? g.dk_shared : g.dk;
  Act* dv = (cross || kv_source) ? g.dv_shared : g.dv;
  if (!cross && !kv_source) be.zero(g.dk, m.n * m.Gh), be.zero(g.dv, m.n * m.Gh);
  Act* dq_attn = g.dq;
  Act* dk_attn = dk;
  if (c.rope) {  // attention's gradients are w.r.t. the rotated q, k
    be.zero(g.dq_rot, m.n * m.Hh), be.zero(g.dk_rot, m.n * m.Gh);
    dq_attn = g.dq_rot, dk_attn = g.dk_rot;
  }
  const AttentionInputs<Act> kv = attention_inputs(be, k, v);
  const int64_t Lk = kv.Lk ? kv.Lk : m.L;
  // Under CP the key/value gradients of the whole samples (from this rank's queries) are summed
  // over the ranks into each rank's chunks.
  Act* dk_keys = dk_attn;
  Act* dv_keys = dv;
  if constexpr (Be::context_parallel)
    if (be.cp) {
      dk_keys = be.acts.dk_whole, dv_keys = be.acts.dv_whole;
      be.zero(dk_keys, m.B / 2 * Lk * m.Gh), be.zero(dv_keys, m.B / 2 * Lk * m.Gh);
    }
  const int64_t window = window_of(c, kind);
  for (const QueryRun& r : runs) {
    const int64_t kv0 = r.sample * Lk * m.Gh;
    const int32_t* doc = kv.doc ? kv.doc + r.sample * Lk : nullptr;
    if (c.differential)
      be.diff_attention_backward(g.do_ + r.row0 * m.Hh, a.q + r.row0 * m.Hh, kv.k + kv0,
                                 kv.v + kv0, doc, layer,
                                 saved_from<typename Be::Stat>(a.diff, r.row0, m),
                                 dq_attn + r.row0 * m.Hh, dk_keys + kv0, dv_keys + kv0,
                                 diff_shape(m, window, kv.Lk, r));
    else
      be.attention_backward(g.do_ + r.row0 * m.Hh, a.q + r.row0 * m.Hh, kv.k + kv0, kv.v + kv0,
                            doc, a.o + r.row0 * m.Hh, a.lse + r.row0 * m.H,
                            dq_attn + r.row0 * m.Hh, dk_keys + kv0, dv_keys + kv0,
                            attention_shape(m, window, kv.Lk, r));
  }
  if constexpr (Be::context_parallel)
    if (be.cp) {
      be.cp_reduce_scatter_sequence(dk_keys, dk_attn, m.Gh);
      be.cp_reduce_scatter_sequence(dv_keys, dv, m.Gh);
    }
  if (c.rope)
    for (const QueryRun& r : runs) {
      be.rope_backward(g.dq_rot + r.row0 * m.Hh, g.dq + r.row0 * m.Hh, r.rows, m.H, r.position);
      be.rope_backward(g.dk_rot + r.row0 * m.Gh, dk + r.row0 * m.Gh, r.rows, m.G, r.position);
    }
  be.end();
  be.begin(OpFamily::projection);
  const auto* w = W + o.qkv_w;
  auto* gw = G + o.qkv_w;
  auto* gb = param_at(G, o.qkv_b);
  be.column_parallel_linear_backward(g.dq, in, w, g.da, gw, gb, m.d, m.Hh, true);
  if (!cross) {
    be.column_parallel_linear_backward(dk, in, w + m.Hh * m.d, g.da, gw + m.Hh * m.d,
                                       gb ? gb + m.Hh : gb, m.d, m.Gh, false);
    be.column_parallel_linear_backward(dv, in, w + (m.Hh + m.Gh) * m.d, g.da,
                                       gw + (m.Hh + m.Gh) * m.d, gb ? gb + m.Hh + m.Gh : gb, m.d,
                                       m.Gh, false);
  }
  be.end();
}

// ---- GMU: g = x W_1 (column-parallel), gm = m * silu(g) (the nGMU: normed), out = gm W_2
// (row-parallel); m is the memory layer's pre-gate y.

template <class Be>
void gmu_forward(Be& be, int layer, LayerActivations<typename Be::Act, typename Be::Stat>& a,
                 const typename Be::Act* in, typename Be::Act* out) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* memory = be.acts.layers[be.c.memory_layer].y;
  be.begin(OpFamily::projection);
  be.linear_forward(in, be.W + o.gmu_in_w, nullptr, a.g, m.d, m.E);
  be.end();
  be.begin(OpFamily::gmu);
  be.gmu_forward(memory, a, param_at(be.P, o.gmu_norm_w));
  be.end();
  be.begin(OpFamily::projection);
  be.row_parallel_linear_forward(a.gm, be.W + o.gmu_out_w, nullptr, out, m.E, m.d);
  be.end();
}

template <class Be>
void gmu_backward(Be& be, int layer, const LayerActivations<typename Be::Act, typename Be::Stat>& a,
                  const typename Be::Act* in, const typename Be::Act* dout) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  auto* G = be.G;
  auto& g = be.acts.grad;
  const auto* memory = be.acts.layers[be.c.memory_layer].y;
  be.begin(OpFamily::projection);
  be.zero(g.dg, m.n * m.E), be.zero(g.dgm, m.n * m.E);
  be.linear_backward(dout, a.gm, be.W + o.gmu_out_w, g.dgm, G + o.gmu_out_w, nullptr, m.E, m.d);
  be.end();
  be.begin(OpFamily::gmu);
  be.gmu_backward(g.dgm, memory, a, param_at(be.P, o.gmu_norm_w), g.dmemory, g.dg,
                  param_at(G, o.gmu_norm_w));
  be.end();
  be.begin(OpFamily::projection);
  be.column_parallel_linear_backward(g.dg, in, be.W + o.gmu_in_w, g.da, G + o.gmu_in_w, nullptr,
                                     m.d, m.E, true);
  be.end();
}

// Mixer forward: reads `in` [n, d] (the normed input, whole), writes the internals and the
// row-parallel product `out` (summed by the caller's region_exit).
template <class Be>
void mixer_forward(Be& be, int layer, LayerActivations<typename Be::Act, typename Be::Stat>& a,
                   const typename Be::Act* in, typename Be::Act* out) {
  switch (be.c.layers[layer]) {
    case LayerKind::mamba: return mamba_forward(be, layer, a, in, out);
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: return attention_forward(be, layer, a, in, out);
    case LayerKind::gmu: return gmu_forward(be, layer, a, in, out);
  }
}

// Mixer backward: dout [n, d] is the gradient of the mixer's output and `in` its input; adds into
// acts.grad.da (the input gradient, summed by the caller's region_enter_backward) and the
// parameter gradients.
template <class Be>
void mixer_backward(Be& be, int layer,
                    const LayerActivations<typename Be::Act, typename Be::Stat>& a,
                    const typename Be::Act* in, const typename Be::Act* dout) {
  switch (be.c.layers[layer]) {
    case LayerKind::mamba: return mamba_backward(be, layer, a, in, dout);
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: return attention_backward(be, layer, a, in, dout);
    case LayerKind::gmu: return gmu_backward(be, layer, a, in, dout);
  }
}

// A layer after its first norm (run by the layer before, or the embedding): the mixer region,
// the residual add with the second norm, and the MLP up to its row-parallel fc2 into
// acts.mlp_out (the caller exits the region when it needs the output).
template <class Be>
void layer_body_forward(Be& be, int layer) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  auto& acts = be.acts;
  auto& a = acts.layers[layer];
  mixer_forward(be, layer, a, be.region_enter(a.a), acts.mixer_out);
  const auto* mixed = be.region_exit(acts.mixer_out);
  be.begin(OpFamily::norm);
  be.residual_norm_forward(a.x_in, mixed, a.x_mid, be.P + o.norm2_w, param_at(be.P, o.norm2_b),
                           a.a2, a.ln2_mean, a.ln2_rstd);
  be.end();
  const auto* in2 = be.region_enter(a.a2);
  be.begin(OpFamily::mlp);
  be.linear_forward(in2, be.W + o.fc1_w, nullptr, a.h, m.d, 2 * m.F);
  be.swiglu_forward(a.h, a.s);
  be.row_parallel_linear_forward(a.s, be.W + o.fc2_w, nullptr, acts.mlp_out, m.F, m.d);
  be.end();
}

// One layer backward: acts.grad.dres holds d(loss)/d(x_out) on entry and d(loss)/d(x_in) on exit.
template <class Be>
void layer_backward(Be& be, int layer) {
  const GraphDims& m = be.m;
  const LayerOffsets& o = be.lay.layers[layer];
  const auto* P = be.P;
  auto* G = be.G;
  auto& g = be.acts.grad;
  const auto& a = be.acts.layers[layer];
  const int64_t nd = m.n * m.d;
  // MLP region; the identity path leaves dres as it is, the norm's backward adds into it.
  const auto* in2 = be.region_enter(a.a2);
  be.begin(OpFamily::mlp);
  const auto* dout = be.region_exit_backward(g.dres, g.dbranch);
  be.zero(g.ds, m.n * m.F), be.zero(g.dh, m.n * 2 * m.F), be.zero(g.da, nd);
  be.linear_backward(dout, a.s, be.W + o.fc2_w, g.ds, G + o.fc2_w, nullptr, m.F, m.d);
  be.swiglu_backward(g.ds, a.h, g.dh);
  be.column_parallel_linear_backward(g.dh, in2, be.W + o.fc1_w, g.da, G + o.fc1_w, nullptr, m.d,
                                     2 * m.F, true);
  be.end();
  const auto* da = be.region_enter_backward(g.da);
  be.begin(OpFamily::norm);
  be.norm_backward(da, a.x_mid, P + o.norm2_w, a.ln2_mean, a.ln2_rstd, g.dres, G + o.norm2_w,
                   param_at(G, o.norm2_b));
  // Mixer region.
  dout = be.region_exit_backward(g.dres, g.dbranch);
  be.zero(g.da, nd);
  be.end();
  mixer_backward(be, layer, a, be.region_enter(a.a), dout);
  da = be.region_enter_backward(g.da);
  be.begin(OpFamily::norm);
  be.norm_backward(da, a.x_in, P + o.norm1_w, a.ln1_mean, a.ln1_rstd, g.dres, G + o.norm1_w,
                   param_at(G, o.norm1_b));
  be.end();
}

// The forward and the loss over the backend's micro-batch.
template <class Be>
ForwardResult forward(Be& be) {
  const ParamLayout& lay = be.lay;
  auto& acts = be.acts;
  const int n_layers = static_cast<int>(be.c.layers.size());
  if constexpr (Be::context_parallel)
    if (be.cp) be.cp_gather_documents();
  auto& first = acts.layers[0];
  be.begin(OpFamily::embedding);
  be.embedding_forward(be.W + lay.embedding, first.x_in);
  be.end();
  be.begin(OpFamily::norm);
  be.norm_forward(first.x_in, be.P + lay.layers[0].norm1_w, param_at(be.P, lay.layers[0].norm1_b),
                  first.a, first.ln1_mean, first.ln1_rstd);
  be.end();
  for (int i = 0; i < n_layers; ++i) {
    layer_body_forward(be, i);
    const auto& a = acts.layers[i];
    const auto* mlp = be.region_exit(acts.mlp_out);
    be.begin(OpFamily::norm);
    if (i + 1 < n_layers) {  // this layer's last residual add with the next layer's first norm
      auto& next = acts.layers[i + 1];
      const LayerOffsets& no = lay.layers[i + 1];
      be.residual_norm_forward(a.x_mid, mlp, next.x_in, be.P + no.norm1_w,
                               param_at(be.P, no.norm1_b), next.a, next.ln1_mean, next.ln1_rstd);
    } else {
      be.residual_norm_forward(a.x_mid, mlp, acts.final_x, be.P + lay.final_norm_w,
                               param_at(be.P, lay.final_norm_b), acts.final_out, acts.final_mean,
                               acts.final_rstd);
    }
    be.end();
  }
  be.begin(OpFamily::loss);
  const ForwardResult r = be.loss_forward(be.W + output_head_offset(lay));
  be.end();
  return r;
}

// Adds grad_scale * d(loss_sum)/d(params) into the backend's gradients, from what the last
// forward on its activations stored; recomputes the layers the plan says.
template <class Be>
void backward(Be& be, double grad_scale, const GradsReady& grads_ready) {
  const GraphDims& m = be.m;
  const ParamLayout& lay = be.lay;
  auto& acts = be.acts;
  auto& g = acts.grad;
  auto* G = be.G;
  const int64_t nr = be.rows.nr;
  const int n_layers = static_cast<int>(be.c.layers.size());
  if (g.dk_shared) be.zero(g.dk_shared, m.n * m.Gh), be.zero(g.dv_shared, m.n * m.Gh);
  if (g.dmemory) be.zero(g.dmemory, m.n * m.E);
  // Loss and final norm: dres = d(loss)/d(final_x).
  be.begin(OpFamily::loss);
  be.zero(g.da, nr * m.d), be.zero(g.dres, nr * m.d);
  const int64_t head = output_head_offset(lay);  // the embedding's gradient too when tied
  be.loss_backward(be.W + head, g.da, G + head, grad_scale);
  be.end();
  be.begin(OpFamily::norm);
  be.norm_backward(g.da, acts.final_x, be.P + lay.final_norm_w, acts.final_mean, acts.final_rstd,
                   g.dres, G + lay.final_norm_w, param_at(G, lay.final_norm_b));
  be.end();
  for (int i = n_layers - 1; i >= 0; --i) {
    if (acts.recompute.layers[i]) {
      // Re-run the layer from its saved input with the forward's ops (the first norm unfused:
      // the same statistics from the same input); its output is not needed again.
      auto& a = acts.layers[i];
      const LayerOffsets& o = lay.layers[i];
      be.begin(OpFamily::norm);
      be.norm_forward(a.x_in, be.P + o.norm1_w, param_at(be.P, o.norm1_b), a.a, a.ln1_mean,
                      a.ln1_rstd);
      be.end();
      layer_body_forward(be, i);
    }
    layer_backward(be, i);
    if (grads_ready) grads_ready(lay.layers[i].norm1_w);  // layer i's first parameter
  }
  be.begin(OpFamily::embedding);
  be.embedding_backward(g.dres, G + lay.embedding);
  be.end();
  if (grads_ready) grads_ready(0);
}

}  // namespace graph
}  // namespace sambay
