#include "core/model.h"

#include "core/check.h"
#include "core/model_graph.h"
#include "kernels/activations.h"
#include "kernels/column_sum.h"
#include "kernels/attention.h"
#include "kernels/causal_conv1d.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gmu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/selective_scan.h"
#include "optim/mup.h"
#include "parallel/context_parallel.h"

#include <cmath>
#include <cstring>

namespace sambay {

namespace {

// Vocabulary rows per GEMM in the loss: the [n, chunk] logits block is the loss's only buffer.
constexpr int64_t kLossVocabChunk = 4096;

template <typename T>
void zero_n(T* p, int64_t n) {
  std::memset(p, 0, sizeof(T) * static_cast<size_t>(n));
}

// Where this rank stands in its tensor-parallel group for a micro-batch of n rows.
struct RowSplit {
  const Communicator* tp = nullptr;  // null: one rank
  int rank = 0;
  bool sp = false;      // sequence parallel
  int64_t nr = 0;       // residual-stream rows this rank keeps (n, or n / tp under SP)
  int64_t row0 = 0;     // the first of them
};

RowSplit row_split(const ModelSplit& split, int64_t n) {
  RowSplit r;
  r.nr = n;
  if (!split.tp || split.tp->size == 1) return r;
  r.tp = split.tp, r.rank = split.tp->rank, r.sp = split.sequence_parallel;
  if (r.sp) {
    SAMBAY_CHECK(n % split.tp->size == 0,
                 "sequence parallelism needs B * L = {} rows divisible by tensor-parallel size {}",
                 n, split.tp->size);
    r.nr = n / split.tp->size, r.row0 = r.rank * r.nr;
  }
  return r;
}

// Hands out typed buffers from the arena (or only counts them when it measures).
template <typename T>
struct Allocator {
  Arena& arena;
  T* take(int64_t count) { return static_cast<T*>(arena.alloc(dtype_of<T>(), {count}).data); }
  double* take_f64(int64_t count) {
    return static_cast<double*>(arena.alloc(DType::f64, {count}).data);
  }
};

// The internals of one layer of this kind (everything but x_in).
template <typename T>
void allocate_internals(const ModelConfig& c, LayerKind kind, const GraphDims& m, int64_t nr,
                        Allocator<T>& al, LayerActivations<T>& a) {
  a.ln1_mean = al.take(nr), a.ln1_rstd = al.take(nr), a.a = al.take(nr * m.d);
  a.x_mid = al.take(nr * m.d);
  a.ln2_mean = al.take(nr), a.ln2_rstd = al.take(nr), a.a2 = al.take(nr * m.d);
  a.h = al.take(m.n * 2 * m.F), a.s = al.take(m.n * m.F);
  switch (kind) {
    case LayerKind::mamba:
      a.xin = al.take(m.n * m.E), a.z = al.take(m.n * m.E), a.xc = al.take(m.n * m.E);
      a.xs = al.take(m.n * m.E), a.dl = al.take(m.n * m.R), a.bc = al.take(m.n * m.N);
      a.cc = al.take(m.n * m.N), a.dt = al.take(m.n * m.E), a.y = al.take(m.n * m.E);
      a.sout = al.take(m.n * m.E);
      break;
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention:
      a.q = al.take(m.n * m.Hh), a.o = al.take(m.n * m.Hh);
      if (kind != LayerKind::cross_attention) a.k = al.take(m.n * m.Gh), a.v = al.take(m.n * m.Gh);
      if (c.differential) {
        DiffAttentionSavedSizes sz =
            diff_attention_saved_sizes({m.B, m.L, m.H, m.G, m.h, c.window});
        a.diff.lambda = al.take_f64(1);
        a.diff.a1 = al.take(sz.a1), a.diff.a2 = al.take(sz.a2);
        a.diff.lse1 = al.take(sz.lse1), a.diff.lse2 = al.take(sz.lse2);
        a.diff.rstd = al.take(sz.rstd);
      } else {
        a.lse = al.take(m.B * m.H * m.L);
      }
      break;
    case LayerKind::gmu:
      a.g = al.take(m.n * m.E), a.gm = al.take(m.n * m.E);
      if (c.normalized_gmu) a.gated = al.take(m.n * m.E), a.gmu_rstd = al.take(m.n);
      break;
  }
}

// The dims the graph runs on for a micro-batch [B, L] of this rank: under context parallelism
// the rank's positions are 2B runs of L / 2 (its two chunks of every sample,
// parallel/context_parallel.h), each an independent row for the per-position and per-run ops.
GraphDims local_dims(const ModelConfig& c, int64_t B, int64_t L, int cp) {
  return cp > 1 ? graph_dims(c, 2 * B, L / 2) : graph_dims(c, B, L);
}

// nr: the residual-stream rows this rank keeps (RowSplit); cp: context-parallel ranks.
template <typename T>
void allocate_activations(const ModelConfig& c, int64_t B, int64_t L, int64_t nr, int cp,
                          const RecomputePlan& recompute, Arena& arena, Activations<T>& acts) {
  const GraphDims m = local_dims(c, B, L, cp);
  Allocator<T> al{arena};
  const int n_layers = static_cast<int>(c.layers.size());
  acts.layers.assign(n_layers, LayerActivations<T>{});
  SAMBAY_CHECK(recompute.layers.size() == c.layers.size(),
               "recompute plan of {} layers for a model of {}", recompute.layers.size(),
               c.layers.size());
  // One set of internals per layer kind serves every recomputed layer of that kind.
  std::vector<LayerActivations<T>> shared(5);
  std::vector<bool> have_shared(5, false);
  for (int i = 0; i < n_layers; ++i) {
    LayerActivations<T>& a = acts.layers[i];
    a.x_in = al.take(nr * m.d);
    const int kind = static_cast<int>(c.layers[i]);
    const bool rc = recompute.layers[i];
    if (!rc) {
      allocate_internals(c, c.layers[i], m, nr, al, a);
    } else {
      if (!have_shared[kind]) allocate_internals(c, c.layers[i], m, nr, al, shared[kind]);
      have_shared[kind] = true;
      const T* x_in = a.x_in;
      a = shared[kind];
      a.x_in = const_cast<T*>(x_in);
    }
    // What other layers read must outlive the layer: the kv layer's k, v and the memory.
    if (rc && i == c.kv_source_layer) a.k = al.take(m.n * m.Gh), a.v = al.take(m.n * m.Gh);
    if (rc && i == c.memory_layer) a.y = al.take(m.n * m.E);
    if (cp > 1 && c.layers[i] == LayerKind::mamba)  // kept: the backward folds with them
      a.scan_state_in = al.take(m.B * m.E * m.N), a.scan_decay = al.take(m.B * m.E * m.N);
  }
  acts.mixer_out = al.take(m.n * m.d), acts.mlp_out = al.take(m.n * m.d);
  if (nr < m.n) acts.region_in = al.take(m.n * m.d);
  const LayerKindsPresent present = layer_kinds_present(c);
  if (cp > 1 && present.attention) {
    const int64_t whole = m.B * cp * m.L * m.Gh;
    acts.k_whole = al.take(whole), acts.v_whole = al.take(whole);
    acts.dk_whole = al.take(whole), acts.dv_whole = al.take(whole);
  }
  if (cp > 1 && present.mamba) {
    const int64_t ext = m.B * (m.K - 1 + m.L) * m.E;
    acts.conv_in = al.take(ext), acts.conv_out = al.take(ext), acts.conv_dx = al.take(ext);
    acts.scan_state = al.take(m.B * m.E * m.N), acts.scan_dstate = al.take(m.B * m.E * m.N);
  }
  acts.final_x = al.take(nr * m.d), acts.final_out = al.take(nr * m.d);
  acts.final_mean = al.take(nr), acts.final_rstd = al.take(nr);
  acts.ce_lse = al.take(nr);

  BackwardScratch<T>& g = acts.grad;
  g.dres = al.take(nr * m.d), g.dbranch = al.take(m.n * m.d), g.da = al.take(m.n * m.d);
  g.dh = al.take(m.n * 2 * m.F), g.ds = al.take(m.n * m.F);
  const LayerKindsPresent& kinds = present;
  if (kinds.mamba) {
    g.dxin = al.take(m.n * m.E), g.dz = al.take(m.n * m.E), g.dxc = al.take(m.n * m.E);
    g.dxs = al.take(m.n * m.E), g.ddl = al.take(m.n * m.R), g.dbc = al.take(m.n * m.N);
    g.dcc = al.take(m.n * m.N), g.ddt = al.take(m.n * m.E), g.dsout = al.take(m.n * m.E);
  }
  if (kinds.attention) {
    g.dq = al.take(m.n * m.Hh), g.do_ = al.take(m.n * m.Hh);
    g.dk = al.take(m.n * m.Gh), g.dv = al.take(m.n * m.Gh);
    if (c.rope) g.dq_rot = al.take(m.n * m.Hh), g.dk_rot = al.take(m.n * m.Gh);
  }
  if (c.kv_source_layer >= 0) g.dk_shared = al.take(m.n * m.Gh), g.dv_shared = al.take(m.n * m.Gh);
  if (kinds.gmu) {
    g.dg = al.take(m.n * m.E), g.dgm = al.take(m.n * m.E);
    if (c.normalized_gmu) g.dgated = al.take(m.n * m.E);
    g.dmemory = al.take(m.n * m.E);
  }
}

// The model's norm (LayerNorm or RMSNorm) over rows of width d.
template <typename T>
void norm_forward(const ModelConfig& c, const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                  int64_t rows) {
  if (c.norm == NormKind::layernorm)
    layernorm_forward(x, w, b, y, mean, rstd, rows, c.d_model, static_cast<T>(c.norm_eps));
  else
    rmsnorm_forward(x, w, y, rstd, rows, c.d_model, static_cast<T>(c.norm_eps));
}

template <typename T>
void norm_backward(const ModelConfig& c, const T* dy, const T* x, const T* w, const T* mean,
                   const T* rstd, T* dx, T* dw, T* db, int64_t rows) {
  if (c.norm == NormKind::layernorm)
    layernorm_backward(dy, x, w, mean, rstd, dx, dw, db, rows, c.d_model);
  else
    rmsnorm_backward(dy, x, w, rstd, dx, dw, rows, c.d_model);
}

template <typename T>
struct LayerContext {
  const ModelConfig& c;
  const GraphDims& m;
  int layer;
  const T* params;
  const LayerOffsets& o;
  const int32_t* doc;
  const Activations<T>& acts;
  const RowSplit& split;
  int64_t E_full;  // the inner width over all TP ranks (the nGMU's norm spans it)
  const Communicator* cp;  // context-parallel group; null: this rank holds whole rows
  double attention_scale;  // Model::attention_scale
};

// ---- Context parallelism: this rank holds two chunks of every sample, run as the m.B = 2B rows
// of m.L positions each (parallel/context_parallel.h).

// The causal conv1d of xin [m.B, m.L, E] into out. Under CP the last K - 1 positions of the
// chunk before each run (held by whichever rank) are put before it (acts.conv_in,
// [m.B, K - 1 + m.L, E]) and the outputs of the run's own positions kept.
template <typename T>
void conv_forward(const LayerContext<T>& x, const T* xin, T* out) {
  const GraphDims& m = x.m;
  const T* P = x.params;
  if (!x.cp) {
    causal_conv1d_forward(xin, P + x.o.conv_w, P + x.o.conv_b, x.doc, out, m.B, m.L, m.E, m.K);
    return;
  }
  const int64_t h = m.K - 1, Le = h + m.L;
  std::vector<T> halo(m.B * h * m.E);
  previous_halo(*x.cp, xin, halo.data(), m.B / 2, m.L, m.E, h);
  for (int64_t b = 0; b < m.B; ++b) {
    std::copy_n(halo.data() + b * h * m.E, h * m.E, x.acts.conv_in + b * Le * m.E);
    std::copy_n(xin + b * m.L * m.E, m.L * m.E, x.acts.conv_in + (b * Le + h) * m.E);
  }
  const int32_t* doc = x.acts.conv_doc.empty() ? nullptr : x.acts.conv_doc.data();
  causal_conv1d_forward(x.acts.conv_in, P + x.o.conv_w, P + x.o.conv_b, doc, x.acts.conv_out,
                        m.B, Le, m.E, m.K);
  for (int64_t b = 0; b < m.B; ++b)
    std::copy_n(x.acts.conv_out + (b * Le + h) * m.E, m.L * m.E, out + b * m.L * m.E);
}

// Its backward: dy [m.B, m.L, E] -> dxin (added) and the conv's parameter gradients; under CP
// the halo's gradient is added into the dxin of the chunk it came from.
template <typename T>
void conv_backward(const LayerContext<T>& x, const T* dy, const T* xin, T* dxin, T* G) {
  const GraphDims& m = x.m;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  if (!x.cp) {
    causal_conv1d_backward(dy, xin, P + o.conv_w, x.doc, dxin, G + o.conv_w, G + o.conv_b, m.B,
                           m.L, m.E, m.K);
    return;
  }
  const int64_t h = m.K - 1, Le = h + m.L;
  std::vector<T> halo(m.B * h * m.E);
  previous_halo(*x.cp, xin, halo.data(), m.B / 2, m.L, m.E, h);
  T* dy_ext = x.acts.conv_out;  // the halo's outputs are not part of the model: no gradient
  for (int64_t b = 0; b < m.B; ++b) {
    std::copy_n(halo.data() + b * h * m.E, h * m.E, x.acts.conv_in + b * Le * m.E);
    std::copy_n(xin + b * m.L * m.E, m.L * m.E, x.acts.conv_in + (b * Le + h) * m.E);
    zero_n(dy_ext + b * Le * m.E, h * m.E);
    std::copy_n(dy + b * m.L * m.E, m.L * m.E, dy_ext + (b * Le + h) * m.E);
  }
  zero_n(x.acts.conv_dx, m.B * Le * m.E);
  const int32_t* doc = x.acts.conv_doc.empty() ? nullptr : x.acts.conv_doc.data();
  causal_conv1d_backward(dy_ext, x.acts.conv_in, P + o.conv_w, doc, x.acts.conv_dx, G + o.conv_w,
                         G + o.conv_b, m.B, Le, m.E, m.K);
  for (int64_t b = 0; b < m.B; ++b) {
    const T* dx = x.acts.conv_dx + b * Le * m.E;
    std::copy_n(dx, h * m.E, halo.data() + b * h * m.E);
    for (int64_t i = 0; i < m.L * m.E; ++i) dxin[b * m.L * m.E + i] += dx[h * m.E + i];
  }
  return_halo_grad(*x.cp, halo.data(), dxin, m.B / 2, m.L, m.E, h);
}

// The selective scan of the rank's rows. Under CP: each run scanned from a zero state to get its
// final state and decay, the carried states folded over the chunks, then scanned again from them
// (y and out are those of the second scan).
template <typename T>
void scan_forward(const LayerContext<T>& x, LayerActivations<T>& a) {
  const GraphDims& m = x.m;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const SelectiveScanShape shape{m.B, m.L, m.E, m.N};
  auto scan = [&](const ScanCarry<T>& carry) {
    selective_scan_forward(a.xs, a.dt, P + o.dt_proj_b, P + o.a_log, a.bc, a.cc, P + o.d_skip,
                           a.z, x.doc, a.y, a.sout, shape, carry);
  };
  if (!x.cp) {
    scan({});
    return;
  }
  ScanCarry<T> local;
  local.state_out = x.acts.scan_state, local.decay_out = a.scan_decay;
  scan(local);
  const int32_t* doc = x.acts.doc_whole.empty() ? nullptr : x.acts.doc_whole.data();
  carry_scan_state(*x.cp, x.acts.scan_state, a.scan_decay, doc, a.scan_state_in, m.B / 2, m.L,
                   m.E * m.N);
  ScanCarry<T> carried;
  carried.state_in = a.scan_state_in;
  scan(carried);
}

// Its backward. Under CP: a first pass gives the gradient of the chunk's carried state from
// its own outputs, the ranks fold those into the gradient arriving at each chunk's final
// state, and the second pass computes every gradient with it.
template <typename T>
void scan_backward(const LayerContext<T>& x, const LayerActivations<T>& a, const T* dsout,
                   const T* dmemory, T* G, BackwardScratch<T>& g) {
  const GraphDims& m = x.m;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const SelectiveScanShape shape{m.B, m.L, m.E, m.N};
  ScanCarry<T> carry;
  if (x.cp) {
    zero_n(x.acts.scan_dstate, m.B * m.E * m.N);
    ScanCarry<T> local;
    local.state_in = a.scan_state_in, local.dstate_in = x.acts.scan_dstate;
    selective_scan_backward(dsout, dmemory, a.xs, a.dt, P + o.dt_proj_b, P + o.a_log, a.bc, a.cc,
                            P + o.d_skip, a.z, x.doc, (T*)nullptr, (T*)nullptr, (T*)nullptr,
                            (T*)nullptr, (T*)nullptr, (T*)nullptr, (T*)nullptr, (T*)nullptr,
                            shape, local);
    const int32_t* doc = x.acts.doc_whole.empty() ? nullptr : x.acts.doc_whole.data();
    carry_scan_grad(*x.cp, x.acts.scan_dstate, a.scan_decay, doc, x.acts.scan_state, m.B / 2, m.L,
                    m.E * m.N);
    carry.state_in = a.scan_state_in, carry.dstate_out = x.acts.scan_state;
  }
  selective_scan_backward(dsout, dmemory, a.xs, a.dt, P + o.dt_proj_b, P + o.a_log, a.bc, a.cc,
                          P + o.d_skip, a.z, x.doc, g.dxs, g.ddt, G + o.dt_proj_b, G + o.a_log,
                          g.dbc, g.dcc, G + o.d_skip, g.dz, shape, carry);
}

// Keys and values an attention layer reads: this rank's own, or under CP the whole samples
// gathered (Lk keys per sample).
template <typename T>
struct AttentionInputs {
  const T *k, *v;
  const int32_t* doc;
  int64_t Lk;  // 0: the queries' own rows
};

template <typename T>
AttentionInputs<T> attention_inputs(const LayerContext<T>& x, const T* k, const T* v) {
  if (!x.cp) return {k, v, x.doc, 0};
  const GraphDims& m = x.m;
  gather_sequence(*x.cp, k, x.acts.k_whole, m.B / 2, m.L, m.Gh);
  gather_sequence(*x.cp, v, x.acts.v_whole, m.B / 2, m.L, m.Gh);
  const int32_t* doc = x.acts.doc_whole.empty() ? nullptr : x.acts.doc_whole.data();
  return {x.acts.k_whole, x.acts.v_whole, doc, 2 * x.cp->size * m.L};
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

template <typename T>
std::vector<QueryRun> query_runs(const LayerContext<T>& x) {
  if (!x.cp) return {{0, 0, x.m.B, 0}};
  std::vector<QueryRun> runs;
  for (int64_t p = 0; p < x.m.B; ++p)
    runs.push_back({p * x.m.L, p / 2, 1, chunk_of(x.cp->rank, int(p % 2), x.cp->size) * x.m.L});
  return runs;
}

// Differential attention's saved buffers for the queries from row0 on.
template <typename T>
DiffAttentionSaved saved_from(const DiffAttentionSaved& s, int64_t row0, const GraphDims& m) {
  DiffAttentionSaved r = s;
  r.a1 = static_cast<T*>(s.a1) + row0 * m.Hh, r.a2 = static_cast<T*>(s.a2) + row0 * m.Hh;
  r.lse1 = static_cast<T*>(s.lse1) + row0 * (m.H / 2);
  r.lse2 = static_cast<T*>(s.lse2) + row0 * (m.H / 2);
  r.rstd = static_cast<T*>(s.rstd) + row0 * (m.H / 2);
  return r;
}

// Sums a partial result over the TP group in place (a row-parallel product's output).
template <typename T>
void tp_sum(const RowSplit& s, T* data, int64_t count) {
  if (s.tp) all_reduce(*s.tp, data, count);
}

// Entry into a tensor-parallel region: the input every TP rank reads whole. Under SP this
// rank's rows are gathered into `gathered`; otherwise every rank already holds all of them.
template <typename T>
const T* region_input(const RowSplit& s, const GraphDims& m, const T* rows, T* gathered) {
  if (!s.sp) return rows;
  all_gather(*s.tp, rows, gathered, s.nr * m.d, dtype_of<T>());
  return gathered;
}

// Exit from a region: out [n, d] holds this rank's partial sum; returns this rank's rows of the
// total (reduce-scattered under SP, all-reduced otherwise), in place in out.
template <typename T>
T* region_output(const RowSplit& s, const GraphDims& m, T* out) {
  if (!s.tp) return out;
  if (!s.sp) {
    all_reduce(*s.tp, out, m.n * m.d);
    return out;
  }
  T* mine = out + s.row0 * m.d;
  reduce_scatter(*s.tp, out, mine, s.nr * m.d, dtype_of<T>(), ReduceOp::sum);
  return mine;
}

// The nGMU's norm statistics are over the whole inner width: row sums summed over TP ranks.
template <typename T>
RowSumReducer inner_width_sum(const RowSplit& s) {
  if (!s.tp) return RowSumReducer{};
  return [&s](double* sums, int64_t rows) { all_reduce(*s.tp, sums, rows); };
}

template <typename T>
AttentionShape attention_shape(const LayerContext<T>& x, int64_t window,
                               const AttentionInputs<T>& kv, const QueryRun& run) {
  return {run.rows, x.m.L, x.m.H, x.m.G, x.m.h, x.m.h, window, kv.Lk, kv.Lk ? run.position : 0};
}

template <typename T>
DiffAttentionShape diff_shape(const LayerContext<T>& x, int64_t window,
                              const AttentionInputs<T>& kv, const QueryRun& run) {
  return {run.rows, x.m.L, x.m.H, x.m.G, x.m.h, window, kv.Lk, kv.Lk ? run.position : 0};
}

// Mixer forward: reads `in` [n, d] (the normed input, whole), writes the internals and `out`
// [n, d] (this rank's partial sum under TP).
template <typename T>
void mixer_forward(const LayerContext<T>& x, LayerActivations<T>& a, const T* in, T* out) {
  const ModelConfig& c = x.c;
  const GraphDims& m = x.m;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const LayerKind kind = c.layers[x.layer];
  switch (kind) {
    case LayerKind::mamba: {
      const T* w_in = P + o.in_proj_w;
      linear_forward(in, w_in, (const T*)nullptr, a.xin, m.n, m.d, m.E);
      linear_forward(in, w_in + m.E * m.d, (const T*)nullptr, a.z, m.n, m.d, m.E);
      conv_forward(x, a.xin, a.xc);
      silu_forward(a.xc, a.xs, m.n * m.E);
      const T* w_x = P + o.x_proj_w;  // rows: delta (R), B (N), C (N)
      linear_forward(a.xs, w_x, (const T*)nullptr, a.dl, m.n, m.E, m.R);
      linear_forward(a.xs, w_x + m.R * m.E, (const T*)nullptr, a.bc, m.n, m.E, m.N);
      linear_forward(a.xs, w_x + (m.R + m.N) * m.E, (const T*)nullptr, a.cc, m.n, m.E, m.N);
      // x_proj is row-parallel (its input channels are split): its small outputs are summed.
      tp_sum(x.split, a.dl, m.n * m.R), tp_sum(x.split, a.bc, m.n * m.N);
      tp_sum(x.split, a.cc, m.n * m.N);
      linear_forward(a.dl, P + o.dt_proj_w, (const T*)nullptr, a.dt, m.n, m.R, m.E);
      scan_forward(x, a);
      linear_forward(a.sout, P + o.out_proj_w, (const T*)nullptr, out, m.n, m.E, m.d);
      break;
    }
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: {
      const bool cross = kind == LayerKind::cross_attention;
      const T* w = P + o.qkv_w;
      const T* b = param_at(P, o.qkv_b);
      linear_forward(in, w, b, a.q, m.n, m.d, m.Hh);
      const T* k = a.k;
      const T* v = a.v;
      if (cross) {
        k = x.acts.layers[c.kv_source_layer].k;
        v = x.acts.layers[c.kv_source_layer].v;
      } else {
        linear_forward(in, w + m.Hh * m.d, b ? b + m.Hh : b, a.k, m.n, m.d, m.Gh);
        linear_forward(in, w + (m.Hh + m.Gh) * m.d, b ? b + m.Hh + m.Gh : b, a.v, m.n, m.d, m.Gh);
        if (c.rope)
          for (const QueryRun& r : query_runs(x)) {
            rope_forward(a.q + r.row0 * m.Hh, a.q + r.row0 * m.Hh, r.rows, m.L, m.H, m.h,
                         c.rope_theta, r.position);
            rope_forward(a.k + r.row0 * m.Gh, a.k + r.row0 * m.Gh, r.rows, m.L, m.G, m.h,
                         c.rope_theta, r.position);
          }
      }
      const AttentionInputs<T> kv = attention_inputs(x, k, v);
      const int64_t Lk = kv.Lk ? kv.Lk : m.L;
      const T scale = static_cast<T>(x.attention_scale);
      const int64_t window = window_of(c, kind);
      for (const QueryRun& r : query_runs(x)) {
        const T* q = a.q + r.row0 * m.Hh;
        const T* kr = kv.k + r.sample * Lk * m.Gh;
        const T* vr = kv.v + r.sample * Lk * m.Gh;
        const int32_t* doc = kv.doc ? kv.doc + r.sample * Lk : nullptr;
        if (c.differential) {
          diff_attention_forward(q, kr, vr, doc, P + o.lambda_q1, P + o.lambda_k1,
                                 P + o.lambda_q2, P + o.lambda_k2,
                                 static_cast<T>(lambda_init_for_layer(x.layer)),
                                 P + o.head_norm_w, a.o + r.row0 * m.Hh,
                                 saved_from<T>(a.diff, r.row0, m), diff_shape(x, window, kv, r),
                                 scale, static_cast<T>(c.norm_eps));
        } else {
          attention_forward(q, kr, vr, doc, a.o + r.row0 * m.Hh, a.lse + r.row0 * m.H,
                            attention_shape(x, window, kv, r), scale);
        }
      }
      // The output bias joins the sum over TP ranks once.
      const T* o_b = x.split.rank == 0 ? param_at(P, o.o_b) : nullptr;
      linear_forward(a.o, P + o.o_w, o_b, out, m.n, m.Hh, m.d);
      break;
    }
    case LayerKind::gmu: {
      const T* memory = x.acts.layers[c.memory_layer].y;
      linear_forward(in, P + o.gmu_in_w, (const T*)nullptr, a.g, m.n, m.d, m.E);
      if (c.normalized_gmu) {  // the norm spans every TP rank's channels
        gmu_forward(memory, a.g, (const T*)nullptr, a.gated, (T*)nullptr, m.n, m.E, T(0));
        rmsnorm_forward_sharded(a.gated, P + o.gmu_norm_w, a.gm, a.gmu_rstd, m.n, m.E, x.E_full,
                                static_cast<T>(c.norm_eps), inner_width_sum<T>(x.split));
      } else {
        gmu_forward(memory, a.g, (const T*)nullptr, a.gm, (T*)nullptr, m.n, m.E, T(0));
      }
      linear_forward(a.gm, P + o.gmu_out_w, (const T*)nullptr, out, m.n, m.E, m.d);
      break;
    }
  }
}

// Mixer backward: dout [n, d] is the gradient of the mixer's output and `in` its input; adds
// into g.da (the gradient of the input; this rank's part under TP) and into the parameter
// gradients G.
template <typename T>
void mixer_backward(const LayerContext<T>& x, const LayerActivations<T>& a, const T* in,
                    const T* dout, T* G, BackwardScratch<T>& g) {
  const ModelConfig& c = x.c;
  const GraphDims& m = x.m;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const LayerKind kind = c.layers[x.layer];
  switch (kind) {
    case LayerKind::mamba: {
      for (T* buf : {g.dxin, g.dz, g.dxc, g.dxs, g.ddt, g.dsout}) zero_n(buf, m.n * m.E);
      zero_n(g.ddl, m.n * m.R), zero_n(g.dbc, m.n * m.N), zero_n(g.dcc, m.n * m.N);
      linear_backward(dout, a.sout, P + o.out_proj_w, g.dsout, G + o.out_proj_w, (T*)nullptr,
                      m.n, m.E, m.d);
      const T* dmemory = x.layer == c.memory_layer ? g.dmemory : nullptr;
      scan_backward(x, a, g.dsout, dmemory, G, g);
      linear_backward(g.ddt, a.dl, P + o.dt_proj_w, g.ddl, G + o.dt_proj_w, (T*)nullptr, m.n, m.R,
                      m.E);
      // Each TP rank's channels contribute to the gradients of x_proj's outputs.
      tp_sum(x.split, g.ddl, m.n * m.R), tp_sum(x.split, g.dbc, m.n * m.N);
      tp_sum(x.split, g.dcc, m.n * m.N);
      const T* w_x = P + o.x_proj_w;
      T* gw_x = G + o.x_proj_w;
      linear_backward(g.ddl, a.xs, w_x, g.dxs, gw_x, (T*)nullptr, m.n, m.E, m.R);
      linear_backward(g.dbc, a.xs, w_x + m.R * m.E, g.dxs, gw_x + m.R * m.E, (T*)nullptr, m.n, m.E,
                      m.N);
      linear_backward(g.dcc, a.xs, w_x + (m.R + m.N) * m.E, g.dxs, gw_x + (m.R + m.N) * m.E,
                      (T*)nullptr, m.n, m.E, m.N);
      silu_backward(g.dxs, a.xc, g.dxc, m.n * m.E);
      conv_backward(x, g.dxc, a.xin, g.dxin, G);
      const T* w_in = P + o.in_proj_w;
      linear_backward(g.dxin, in, w_in, g.da, G + o.in_proj_w, (T*)nullptr, m.n, m.d, m.E);
      linear_backward(g.dz, in, w_in + m.E * m.d, g.da, G + o.in_proj_w + m.E * m.d,
                      (T*)nullptr, m.n, m.d, m.E);
      break;
    }
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: {
      const bool cross = kind == LayerKind::cross_attention;
      const bool kv_source = x.layer == c.kv_source_layer;
      zero_n(g.dq, m.n * m.Hh), zero_n(g.do_, m.n * m.Hh);
      // The output bias's gradient: from every row, or under SP from this rank's rows (the
      // whole-tensor gradients of SP ranks are summed in reduce_tensor_parallel_grads).
      T* g_ob = param_at(G, o.o_b);
      linear_backward(dout, a.o, P + o.o_w, g.do_, G + o.o_w, x.split.sp ? nullptr : g_ob, m.n,
                      m.Hh, m.d);
      if (x.split.sp && g_ob)
        add_column_sums(g_ob, x.split.nr, m.d, [&](int64_t r, int64_t j) {
          return static_cast<double>(dout[(x.split.row0 + r) * m.d + j]);
        });
      const T* k = cross ? x.acts.layers[c.kv_source_layer].k : a.k;
      const T* v = cross ? x.acts.layers[c.kv_source_layer].v : a.v;
      // Key/value gradients: cross layers and the kv layer itself add into the shared buffers
      // (zeroed at the start of backward); other self-attention layers use their own.
      T* dk = (cross || kv_source) ? g.dk_shared : g.dk;
      T* dv = (cross || kv_source) ? g.dv_shared : g.dv;
      if (!cross && !kv_source) zero_n(g.dk, m.n * m.Gh), zero_n(g.dv, m.n * m.Gh);
      T* dq_attn = g.dq;
      T* dk_attn = dk;
      if (c.rope) {  // attention's gradients are w.r.t. the rotated q, k
        zero_n(g.dq_rot, m.n * m.Hh), zero_n(g.dk_rot, m.n * m.Gh);
        dq_attn = g.dq_rot, dk_attn = g.dk_rot;
      }
      const AttentionInputs<T> kv = attention_inputs(x, k, v);
      const int64_t Lk = kv.Lk ? kv.Lk : m.L;
      // Under CP the key/value gradients of the whole samples (from this rank's queries) are
      // summed over the ranks into each rank's chunks.
      T* dk_keys = dk_attn;
      T* dv_keys = dv;
      if (x.cp) {
        dk_keys = x.acts.dk_whole, dv_keys = x.acts.dv_whole;
        zero_n(dk_keys, m.B / 2 * Lk * m.Gh), zero_n(dv_keys, m.B / 2 * Lk * m.Gh);
      }
      const T scale = static_cast<T>(x.attention_scale);
      const int64_t window = window_of(c, kind);
      for (const QueryRun& r : query_runs(x)) {
        const int64_t kv0 = r.sample * Lk * m.Gh;
        const int32_t* doc = kv.doc ? kv.doc + r.sample * Lk : nullptr;
        if (c.differential) {
          diff_attention_backward(g.do_ + r.row0 * m.Hh, a.q + r.row0 * m.Hh, kv.k + kv0,
                                  kv.v + kv0, doc, P + o.lambda_q1, P + o.lambda_k1,
                                  P + o.lambda_q2, P + o.lambda_k2,
                                  static_cast<T>(lambda_init_for_layer(x.layer)),
                                  P + o.head_norm_w, saved_from<T>(a.diff, r.row0, m),
                                  dq_attn + r.row0 * m.Hh, dk_keys + kv0, dv_keys + kv0,
                                  G + o.lambda_q1, G + o.lambda_k1, G + o.lambda_q2,
                                  G + o.lambda_k2, G + o.head_norm_w,
                                  diff_shape(x, window, kv, r), scale);
        } else {
          attention_backward(g.do_ + r.row0 * m.Hh, a.q + r.row0 * m.Hh, kv.k + kv0, kv.v + kv0,
                             doc, a.o + r.row0 * m.Hh, a.lse + r.row0 * m.H,
                             dq_attn + r.row0 * m.Hh, dk_keys + kv0, dv_keys + kv0,
                             attention_shape(x, window, kv, r), scale);
        }
      }
      if (x.cp) {
        reduce_scatter_sequence_add(*x.cp, dk_keys, dk_attn, m.B / 2, m.L, m.Gh);
        reduce_scatter_sequence_add(*x.cp, dv_keys, dv, m.B / 2, m.L, m.Gh);
      }
      if (c.rope)
        for (const QueryRun& r : query_runs(x)) {
          rope_backward(g.dq_rot + r.row0 * m.Hh, g.dq + r.row0 * m.Hh, r.rows, m.L, m.H, m.h,
                        c.rope_theta, r.position);
          rope_backward(g.dk_rot + r.row0 * m.Gh, dk + r.row0 * m.Gh, r.rows, m.L, m.G, m.h,
                        c.rope_theta, r.position);
        }
      const T* w = P + o.qkv_w;
      T* gw = G + o.qkv_w;
      T* gb = param_at(G, o.qkv_b);
      linear_backward(g.dq, in, w, g.da, gw, gb, m.n, m.d, m.Hh);
      if (!cross) {
        linear_backward(dk, in, w + m.Hh * m.d, g.da, gw + m.Hh * m.d, gb ? gb + m.Hh : gb, m.n,
                        m.d, m.Gh);
        linear_backward(dv, in, w + (m.Hh + m.Gh) * m.d, g.da, gw + (m.Hh + m.Gh) * m.d,
                        gb ? gb + m.Hh + m.Gh : gb, m.n, m.d, m.Gh);
      }
      break;
    }
    case LayerKind::gmu: {
      const T* memory = x.acts.layers[c.memory_layer].y;
      zero_n(g.dg, m.n * m.E), zero_n(g.dgm, m.n * m.E);
      linear_backward(dout, a.gm, P + o.gmu_out_w, g.dgm, G + o.gmu_out_w, (T*)nullptr, m.n, m.E,
                      m.d);
      const T* dgated = g.dgm;
      if (c.normalized_gmu) {
        zero_n(g.dgated, m.n * m.E);
        rmsnorm_backward_sharded(g.dgm, a.gated, P + o.gmu_norm_w, a.gmu_rstd, g.dgated,
                                 G + o.gmu_norm_w, m.n, m.E, x.E_full,
                                 inner_width_sum<T>(x.split));
        dgated = g.dgated;
      }
      gmu_backward(dgated, memory, a.g, (const T*)nullptr, (const T*)nullptr, g.dmemory, g.dg,
                   (T*)nullptr, m.n, m.E);
      linear_backward(g.dg, in, P + o.gmu_in_w, g.da, G + o.gmu_in_w, (T*)nullptr, m.n, m.d, m.E);
      break;
    }
  }
}

// One layer forward: x_in -> x_out (x_out may be the next layer's x_in or the final x). Under
// sequence parallelism x_in, x_out and the norms cover this rank's rows only.
template <typename T>
void layer_forward(const LayerContext<T>& x, LayerActivations<T>& a, T* x_out, T* mixer_out,
                   T* mlp_out, double residual_scale) {
  const GraphDims& m = x.m;
  const RowSplit& sp = x.split;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const int64_t nd = sp.nr * m.d;
  const T rs = static_cast<T>(residual_scale);
  T* gathered = x.acts.region_in;
  norm_forward(x.c, a.x_in, P + o.norm1_w, param_at(P, o.norm1_b), a.a, a.ln1_mean, a.ln1_rstd,
               sp.nr);
  mixer_forward(x, a, region_input(sp, m, a.a, gathered), mixer_out);
  const T* mixed = region_output(sp, m, mixer_out);
  for (int64_t i = 0; i < nd; ++i) a.x_mid[i] = a.x_in[i] + rs * mixed[i];
  norm_forward(x.c, a.x_mid, P + o.norm2_w, param_at(P, o.norm2_b), a.a2, a.ln2_mean, a.ln2_rstd,
               sp.nr);
  linear_forward(region_input(sp, m, a.a2, gathered), P + o.fc1_w, (const T*)nullptr, a.h, m.n,
                 m.d, 2 * m.F);
  swiglu_forward(a.h, a.s, m.n, m.F);
  linear_forward(a.s, P + o.fc2_w, (const T*)nullptr, mlp_out, m.n, m.F, m.d);
  const T* mlp = region_output(sp, m, mlp_out);
  for (int64_t i = 0; i < nd; ++i) x_out[i] = a.x_mid[i] + rs * mlp[i];
}

// The gradient of a block's output, [n, d] whole: residual_scale * dres on this rank's rows,
// gathered over SP ranks (the transpose of the region's reduce-scatter).
template <typename T>
const T* block_output_grad(const RowSplit& sp, const GraphDims& m, const T* dres, T rs,
                           T* dbranch) {
  T* mine = dbranch + sp.row0 * m.d;
  for (int64_t i = 0; i < sp.nr * m.d; ++i) mine[i] = rs * dres[i];
  if (sp.sp) all_gather(*sp.tp, mine, dbranch, sp.nr * m.d, dtype_of<T>());
  return dbranch;
}

// One layer backward: g.dres holds d(loss)/d(x_out) on entry and d(loss)/d(x_in) on exit.
template <typename T>
void layer_backward(const LayerContext<T>& x, const LayerActivations<T>& a, T* G,
                    BackwardScratch<T>& g, double residual_scale) {
  const GraphDims& m = x.m;
  const RowSplit& sp = x.split;
  const T* P = x.params;
  const LayerOffsets& o = x.o;
  const int64_t nd = m.n * m.d;
  const T rs = static_cast<T>(residual_scale);
  T* gathered = x.acts.region_in;
  // MLP branch; the identity path leaves dres as it is, the norm's backward adds into it.
  const T* dout = block_output_grad(sp, m, g.dres, rs, g.dbranch);
  const T* in2 = region_input(sp, m, a.a2, gathered);
  zero_n(g.ds, m.n * m.F), zero_n(g.dh, m.n * 2 * m.F), zero_n(g.da, nd);
  linear_backward(dout, a.s, P + o.fc2_w, g.ds, G + o.fc2_w, (T*)nullptr, m.n, m.F, m.d);
  swiglu_backward(g.ds, a.h, g.dh, m.n, m.F);
  linear_backward(g.dh, in2, P + o.fc1_w, g.da, G + o.fc1_w, (T*)nullptr, m.n, m.d, 2 * m.F);
  norm_backward(x.c, region_output(sp, m, g.da), a.x_mid, P + o.norm2_w, a.ln2_mean, a.ln2_rstd,
                g.dres, G + o.norm2_w, param_at(G, o.norm2_b), sp.nr);
  // Mixer branch.
  dout = block_output_grad(sp, m, g.dres, rs, g.dbranch);
  zero_n(g.da, nd);
  mixer_backward(x, a, region_input(sp, m, a.a, gathered), dout, G, g);
  norm_backward(x.c, region_output(sp, m, g.da), a.x_in, P + o.norm1_w, a.ln1_mean, a.ln1_rstd,
                g.dres, G + o.norm1_w, param_at(G, o.norm1_b), sp.nr);
}

// The CP group when it has more than one rank.
const Communicator* context_parallel_group(const ModelSplit& split) {
  return split.cp && split.cp->size > 1 ? split.cp : nullptr;
}

// Under CP: the document ids of the whole samples, and those of the conv's input (for each run,
// the K - 1 positions before its chunk, then the chunk). Before position 0 the conv input is
// zero, so the ids given there do not matter.
template <typename T>
void gather_document_ids(const Communicator& cp, const int32_t* doc, const GraphDims& m,
                         Activations<T>& acts) {
  acts.doc_whole.clear(), acts.conv_doc.clear();
  if (!doc) return;
  const int64_t Lw = 2 * cp.size * m.L, h = m.K - 1;
  acts.doc_whole.resize(m.B / 2 * Lw);
  gather_sequence(cp, doc, acts.doc_whole.data(), m.B / 2, m.L, 1);
  for (int64_t p = 0; p < m.B; ++p) {
    const int64_t first = chunk_of(cp.rank, int(p % 2), cp.size) * m.L;
    for (int64_t j = 0; j < h + m.L; ++j)
      acts.conv_doc.push_back(acts.doc_whole[p / 2 * Lw + std::max<int64_t>(0, first - h + j)]);
  }
}

}  // namespace

template <typename T>
Model<T> make_model(const ModelConfig& config, uint64_t seed) {
  validate_model_config(config, "model config '" + config.name + "'");
  Model<T> model;
  model.config = model.full_config = config;
  model.layout = build_param_layout(config);
  // The config's init rule and muP++'s residual, logit and attention multipliers.
  apply_init_rules(model.layout, config);
  const MupConfig mup = mup_config_for(config);
  model.residual_scale = mup_residual_scale(mup);
  model.logit_scale = mup_logit_scale(mup);
  model.attention_scale = mup_attention_scale(mup, config.head_dim > 0 ? config.head_dim : 1);
  model.params.resize(model.layout.total);
  model.grads.assign(model.layout.total, T(0));
  init_params(model.layout, model.params.data(), seed);
  return model;
}

template <typename T>
Model<T> make_model_shard(const ModelConfig& config, uint64_t seed, const ModelSplit& split) {
  Model<T> model = make_model<T>(config, seed);
  model.split = split;
  if (!split.tp || split.tp->size == 1) return model;
  const int tp = split.tp->size;
  model.config = tensor_parallel_config(config, tp);
  ParamLayout shard_layout = build_param_layout(model.config);
  std::vector<T> shard(shard_layout.total);
  shard_params(model.layout, shard_layout, model.params.data(), shard.data(), tp, split.tp->rank);
  model.layout = std::move(shard_layout);
  model.params = std::move(shard);
  model.grads.assign(model.layout.total, T(0));
  return model;
}

template <typename T>
void reduce_tensor_parallel_grads(Model<T>& model) {
  const ModelSplit& split = model.split;
  if (!split.tp || split.tp->size == 1) return;
  for (const ParamSpec& p : model.layout.params)
    if (p.tp_partial_grad || (p.tp_dim < 0 && split.sequence_parallel))
      all_reduce(*split.tp, model.grads.data() + p.offset, p.numel);
}

template <typename T>
Activations<T> plan_activations(const Model<T>& model, int64_t B, int64_t L,
                                const RecomputePlan& recompute) {
  SAMBAY_CHECK(B > 0 && L > 0, "micro-batch shape must be positive, got B={} L={}", B, L);
  const int64_t nr = row_split(model.split, B * L).nr;
  const int cp = model.split.cp ? model.split.cp->size : 1;
  SAMBAY_CHECK(cp == 1 || (L % 2 == 0 && L / 2 >= model.config.d_conv - 1),
               "context parallelism: a rank's {} positions must be two chunks of at least the "
               "conv's halo of {}",
               L, model.config.d_conv - 1);
  Arena measure = Arena::measuring("activations");
  Activations<T> dry;
  allocate_activations(model.config, B, L, nr, cp, recompute, measure, dry);
  Activations<T> acts;
  acts.B = B, acts.L = L, acts.recompute = recompute;
  acts.arena = Arena(Device::cpu, measure.used, "activations");
  allocate_activations(model.config, B, L, nr, cp, recompute, acts.arena, acts);
  return acts;
}

int64_t activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                         const RecomputePlan& recompute, size_t element_size) {
  Arena measure = Arena::measuring("activations");
  if (element_size == sizeof(double)) {
    Activations<double> dry;
    allocate_activations(config, B, L, B * L, 1, recompute, measure, dry);
  } else {
    Activations<float> dry;
    allocate_activations(config, B, L, B * L, 1, recompute, measure, dry);
  }
  return static_cast<int64_t>(measure.used);
}

template <typename T>
ForwardResult model_forward(const Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                            const int32_t* targets, const int32_t* doc) {
  const ModelConfig& c = model.config;
  const GraphDims m =
      local_dims(c, acts.B, acts.L, model.split.cp ? model.split.cp->size : 1);
  const RowSplit sp = row_split(model.split, m.n);
  const Communicator* cp = context_parallel_group(model.split);
  if (cp) gather_document_ids(*cp, doc, m, acts);
  const T* P = model.params.data();
  const int n_layers = static_cast<int>(c.layers.size());
  embedding_forward(tokens + sp.row0, P + model.layout.embedding, acts.layers[0].x_in, sp.nr,
                    c.vocab, m.d);
  for (int i = 0; i < n_layers; ++i) {
    LayerContext<T> x{c, m, i, P, model.layout.layers[i], doc, acts, sp,
                      model.full_config.d_inner, cp, model.attention_scale};
    T* x_out = i + 1 < n_layers ? acts.layers[i + 1].x_in : acts.final_x;
    layer_forward(x, acts.layers[i], x_out, acts.mixer_out, acts.mlp_out, model.residual_scale);
  }
  norm_forward(c, acts.final_x, P + model.layout.final_norm_w, param_at(P, model.layout.final_norm_b),
               acts.final_out, acts.final_mean, acts.final_rstd, sp.nr);
  ForwardResult r;
  r.loss_sum = tied_cross_entropy_forward(acts.final_out, P + output_head_offset(model.layout),
                                          targets + sp.row0, acts.ce_lse, sp.nr, m.d, c.vocab,
                                          static_cast<T>(model.logit_scale),
                                          std::min<int64_t>(kLossVocabChunk, c.vocab),
                                          &r.valid_rows, model.logit_rounding);
  if (sp.sp) {  // each SP rank scored its own rows
    double sums[2] = {r.loss_sum, static_cast<double>(r.valid_rows)};
    all_reduce(*sp.tp, sums, 2);
    r.loss_sum = sums[0], r.valid_rows = static_cast<int64_t>(sums[1]);
  }
  return r;
}

template <typename T>
void model_backward(Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                    const int32_t* targets, const int32_t* doc, T grad_scale) {
  const ModelConfig& c = model.config;
  const GraphDims m =
      local_dims(c, acts.B, acts.L, model.split.cp ? model.split.cp->size : 1);
  const RowSplit sp = row_split(model.split, m.n);
  const T* P = model.params.data();
  T* G = model.grads.data();
  BackwardScratch<T>& g = acts.grad;
  const int n_layers = static_cast<int>(c.layers.size());
  const ParamLayout& lay = model.layout;

  if (g.dk_shared) zero_n(g.dk_shared, m.n * m.Gh), zero_n(g.dv_shared, m.n * m.Gh);
  if (g.dmemory) zero_n(g.dmemory, m.n * m.E);

  // Loss and final norm: dres = d(loss)/d(final_x).
  zero_n(g.da, sp.nr * m.d), zero_n(g.dres, sp.nr * m.d);
  const int64_t head = output_head_offset(lay);  // the embedding's gradient too when tied
  tied_cross_entropy_backward(acts.final_out, P + head, targets + sp.row0, acts.ce_lse, g.da,
                              G + head, sp.nr, m.d, c.vocab,
                              static_cast<T>(model.logit_scale),
                              std::min<int64_t>(kLossVocabChunk, c.vocab), grad_scale,
                              model.logit_rounding);
  norm_backward(c, g.da, acts.final_x, P + lay.final_norm_w, acts.final_mean, acts.final_rstd,
                g.dres, G + lay.final_norm_w, param_at(G, lay.final_norm_b), sp.nr);

  for (int i = n_layers - 1; i >= 0; --i) {
    LayerContext<T> x{c, m, i, P, lay.layers[i], doc, acts, sp, model.full_config.d_inner,
                      context_parallel_group(model.split), model.attention_scale};
    if (acts.recompute.layers[i]) {
      // Re-run the layer from its saved input. Its output is not needed again and lands in
      // mlp_out (updated in place), so the next layer's saved input stays intact.
      layer_forward(x, acts.layers[i], acts.mlp_out, acts.mixer_out, acts.mlp_out,
                    model.residual_scale);
    }
    layer_backward(x, acts.layers[i], G, g, model.residual_scale);
  }
  embedding_backward(tokens + sp.row0, g.dres, G + lay.embedding, sp.nr, c.vocab, m.d);
}

template <typename T>
int32_t greedy_next_token(const Model<T>& model, Activations<T>& acts, const int32_t* context,
                          int64_t len) {
  SAMBAY_CHECK(acts.B == 1, "greedy decoding plans one row, got B = {}", acts.B);
  SAMBAY_CHECK(!model.split.tp || model.split.tp->size == 1,
               "greedy decoding runs on one rank holding the whole model");
  SAMBAY_CHECK(len >= 1 && len <= acts.L, "context of {} tokens for activations planned for {}",
               len, acts.L);
  const int32_t pad = context[len - 1];
  std::vector<int32_t> tokens(context, context + len), targets(acts.L, -1);
  tokens.resize(acts.L, pad);
  model_forward(model, acts, tokens.data(), targets.data(), nullptr);
  const ModelConfig& c = model.config;
  const T* h = acts.final_out + (len - 1) * c.d_model;
  const T* head = model.params.data() + output_head_offset(model.layout);
  int32_t best = 0;
  double best_logit = -INFINITY;
  for (int64_t v = 0; v < c.vocab; ++v) {
    double logit = 0;
    for (int64_t j = 0; j < c.d_model; ++j) logit += double(h[j]) * head[v * c.d_model + j];
    if (logit > best_logit) best_logit = logit, best = static_cast<int32_t>(v);
  }
  return best;  // the logit scale is positive: it does not change the argmax
}

double layer_forward_flops_per_token(const ModelConfig& c, int layer, int64_t L) {
  // Matrix products: 2 FLOPs per multiply-add.
  const double d = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank;
  const double Hh = double(c.n_heads) * c.head_dim, Gh = double(c.n_kv_heads) * c.head_dim;
  double matmul = 3 * d * c.d_ff;
  double attention = 0;  // scores and values
  switch (c.layers[layer]) {
    case LayerKind::mamba:
      matmul += d * 2 * E + E * (R + 2 * N) + R * E + E * d;
      break;
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention: {
      const bool cross = c.layers[layer] == LayerKind::cross_attention;
      matmul += d * (cross ? Hh : Hh + 2 * Gh) + Hh * d;
      // Average keys seen per query under the causal (and window) mask.
      const double keys = c.layers[layer] == LayerKind::sliding_window && c.window < L
                              ? c.window - (c.window - 1) * c.window / (2.0 * L)
                              : (L + 1) / 2.0;
      // q k^T and p v; differential attention runs two maps whose values are twice as wide.
      const double per_key = c.differential ? 2 * (Hh / 2) * (1 + 2) : Hh * 2;
      attention += 2 * keys * per_key;
      break;
    }
    case LayerKind::gmu:
      matmul += 2 * d * E;
      break;
  }
  return 2 * matmul + attention;
}

double training_flops_per_token(const ModelConfig& c, int64_t L) {
  // x3 for forward + two backward products; the output head (the embedding gather is not a
  // product) and every layer.
  double forward = 2.0 * c.vocab * c.d_model;
  for (int i = 0; i < static_cast<int>(c.layers.size()); ++i)
    forward += layer_forward_flops_per_token(c, i, L);
  return 3 * forward;
}

double archscale_estimated_flops_per_token(const ModelConfig& c, int64_t L) {
  return 3.0 * (2.0 * double(parameter_count(c)) +
                4.0 * double(c.n_layers()) * double(c.d_model) * double(L));
}

double six_n_flops_per_token(const ModelConfig& c) {
  return 6.0 * double(non_embedding_parameter_count(c));
}

template Model<float> make_model<float>(const ModelConfig&, uint64_t);
template Model<double> make_model<double>(const ModelConfig&, uint64_t);
template Model<float> make_model_shard<float>(const ModelConfig&, uint64_t, const ModelSplit&);
template Model<double> make_model_shard<double>(const ModelConfig&, uint64_t, const ModelSplit&);
template void reduce_tensor_parallel_grads<float>(Model<float>&);
template void reduce_tensor_parallel_grads<double>(Model<double>&);
template Activations<float> plan_activations<float>(const Model<float>&, int64_t, int64_t,
                                                    const RecomputePlan&);
template Activations<double> plan_activations<double>(const Model<double>&, int64_t, int64_t,
                                                      const RecomputePlan&);
template ForwardResult model_forward<float>(const Model<float>&, Activations<float>&,
                                            const int32_t*, const int32_t*, const int32_t*);
template ForwardResult model_forward<double>(const Model<double>&, Activations<double>&,
                                             const int32_t*, const int32_t*, const int32_t*);
template int32_t greedy_next_token<float>(const Model<float>&, Activations<float>&,
                                         const int32_t*, int64_t);
template int32_t greedy_next_token<double>(const Model<double>&, Activations<double>&,
                                          const int32_t*, int64_t);
template void model_backward<float>(Model<float>&, Activations<float>&, const int32_t*,
                                    const int32_t*, const int32_t*, float);
template void model_backward<double>(Model<double>&, Activations<double>&, const int32_t*,
                                     const int32_t*, const int32_t*, double);

}  // namespace sambay
