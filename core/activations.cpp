#include "core/activations.h"

#include "core/check.h"
#include "core/model_graph.h"
#include "kernels/causal_conv1d.h"
#include "kernels/selective_scan.h"

#include <algorithm>

namespace sambay {

namespace {

// Typed buffers from an arena (or only counted, when it measures).
struct Allocator {
  Arena& arena;
  template <typename E>
  E* take(int64_t n) {
    return static_cast<E*>(arena.alloc(dtype_of<E>(), {n}).data);
  }
};

// The internals of one layer of this kind (everything but x_in). nr: the residual-stream rows.
template <typename A, typename S>
void allocate_internals(const ModelConfig& c, LayerKind kind, const GraphDims& m, int64_t nr,
                        const BackendPlan& be, Allocator& al, LayerActivations<A, S>& a) {
  auto act = [&](int64_t n) { return al.take<A>(n); };
  auto stat = [&](int64_t n) { return al.take<S>(n); };
  a.ln1_mean = stat(nr), a.ln1_rstd = stat(nr), a.a = act(nr * m.d);
  a.x_mid = act(nr * m.d);
  a.ln2_mean = stat(nr), a.ln2_rstd = stat(nr), a.a2 = act(nr * m.d);
  a.h = act(m.n * 2 * m.F), a.s = act(m.n * m.F);
  switch (kind) {
    case LayerKind::mamba:
      a.xin = act(m.n * m.E), a.z = act(m.n * m.E);
      if (be.conv_output) a.xc = act(m.n * m.E);
      a.xs = act(m.n * m.E);
      a.dl = act(m.n * m.R), a.bc = act(m.n * m.N), a.cc = act(m.n * m.N);
      a.dt = act(m.n * m.E), a.y = act(m.n * m.E), a.sout = act(m.n * m.E);
      if (be.cuda_workspaces)
        a.scan_checkpoint = al.take<float>(selective_scan_checkpoint_floats({m.B, m.L, m.E, m.N}));
      break;
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention:
      a.q = act(m.n * m.Hh), a.o = act(m.n * m.Hh);
      if (kind != LayerKind::cross_attention) a.k = act(m.n * m.Gh), a.v = act(m.n * m.Gh);
      if (c.differential) {
        const DiffAttentionSavedSizes sz =
            diff_attention_saved_sizes({m.B, m.L, m.H, m.G, m.h, c.window});
        a.diff.lambda = al.take<double>(1);
        a.diff.a1 = stat(sz.a1), a.diff.a2 = stat(sz.a2);
        a.diff.lse1 = stat(sz.lse1), a.diff.lse2 = stat(sz.lse2), a.diff.rstd = stat(sz.rstd);
      } else {
        a.lse = stat(m.B * m.H * m.L);
      }
      break;
    case LayerKind::gmu:
      a.g = act(m.n * m.E), a.gm = act(m.n * m.E);
      if (c.normalized_gmu) {
        if (be.gmu_pre_norm) a.gated = act(m.n * m.E);
        a.gmu_rstd = stat(m.n);
      }
      break;
  }
}

}  // namespace

template <typename A, typename S>
void allocate_activations(const ModelConfig& c, const ActivationShape& shape,
                          const RecomputePlan& recompute, const BackendPlan& be, Arena& arena,
                          GraphActivations<A, S>& acts) {
  const GraphDims m = local_dims(c, shape.B, shape.L, shape.cp);
  const int64_t nr = shape.nr;
  const bool cp = shape.cp > 1;
  Allocator al{arena};
  auto act = [&](int64_t n) { return al.take<A>(n); };
  auto stat = [&](int64_t n) { return al.take<S>(n); };
  const int n_layers = static_cast<int>(c.layers.size());
  SAMBAY_CHECK(static_cast<int>(recompute.layers.size()) == n_layers,
               "recompute plan of {} layers for model '{}' of {}", recompute.layers.size(), c.name,
               n_layers);
  acts.layers.assign(n_layers, LayerActivations<A, S>{});
  // One set of internals per layer kind serves every recomputed layer of that kind.
  std::vector<LayerActivations<A, S>> shared(5);
  std::vector<bool> have_shared(5, false);
  for (int i = 0; i < n_layers; ++i) {
    LayerActivations<A, S>& a = acts.layers[i];
    a.x_in = act(nr * m.d);
    const int kind = static_cast<int>(c.layers[i]);
    const bool rc = recompute.layers[i];
    if (!rc) {
      allocate_internals(c, c.layers[i], m, nr, be, al, a);
    } else {
      if (!have_shared[kind]) allocate_internals(c, c.layers[i], m, nr, be, al, shared[kind]);
      have_shared[kind] = true;
      A* x_in = a.x_in;
      a = shared[kind];
      a.x_in = x_in;
    }
    // What other layers read must outlive the layer: the kv layer's k, v and the memory.
    if (rc && i == c.kv_source_layer) a.k = act(m.n * m.Gh), a.v = act(m.n * m.Gh);
    if (rc && i == c.memory_layer) a.y = act(m.n * m.E);
    if (cp && c.layers[i] == LayerKind::mamba)  // kept: the backward folds with them
      a.scan_state_in = stat(m.B * m.E * m.N), a.scan_decay = stat(m.B * m.E * m.N);
  }
  const int64_t block_rows = be.fp32_partials ? nr : m.n;
  acts.mixer_out = act(block_rows * m.d), acts.mlp_out = act(block_rows * m.d);
  acts.final_x = act(nr * m.d), acts.final_out = act(nr * m.d);
  acts.final_mean = stat(nr), acts.final_rstd = stat(nr), acts.ce_lse = stat(nr);
  if (be.device_batch) {
    acts.loss = CrossEntropyPlan{nr, m.d, c.vocab, kGpuLossChunk, recompute.loss_kept_chunks};
    // 256-byte aligned (the arena's alignment), as the loss asks; bytes are a multiple of 256.
    acts.loss_workspace =
        al.take<float>(static_cast<int64_t>(cross_entropy_workspace(acts.loss).bytes / 4));
    acts.tokens = al.take<int32_t>(m.n), acts.targets = al.take<int32_t>(m.n);
    acts.doc = al.take<int32_t>(m.n);
  }
  if (shape.tp && be.fp32_partials)
    acts.tp_partial = al.take<float>(m.n * std::max(m.d, m.R + 2 * m.N));
  if (nr < m.n) {
    acts.region_in = act(m.n * m.d);
    if (be.device_batch) acts.tp_scalars = al.take<double>(2);
  }
  const LayerKindsPresent kinds = layer_kinds_present(c);
  if (cp && kinds.attention) {
    const int64_t whole = m.B * shape.cp * m.L * m.Gh;
    acts.k_whole = act(whole), acts.v_whole = act(whole);
    acts.dk_whole = act(whole), acts.dv_whole = act(whole);
  }
  if (cp && kinds.mamba) {
    const int64_t ext = m.B * (m.K - 1 + m.L) * m.E;
    acts.conv_halo = act(m.B * (m.K - 1) * m.E);
    acts.conv_in = act(ext), acts.conv_out = act(ext), acts.conv_dx = act(ext);
    acts.scan_state = stat(m.B * m.E * m.N), acts.scan_dstate = stat(m.B * m.E * m.N);
  }

  BackwardScratch<A>& g = acts.grad;
  g.dres = act(nr * m.d), g.dbranch = act(m.n * m.d), g.da = act(m.n * m.d);
  g.dh = act(m.n * 2 * m.F), g.ds = act(m.n * m.F);
  if (kinds.mamba) {
    g.dxin = act(m.n * m.E), g.dz = act(m.n * m.E);
    if (be.conv_output) g.dxc = act(m.n * m.E);
    g.dxs = act(m.n * m.E);
    g.ddl = act(m.n * m.R), g.dbc = act(m.n * m.N), g.dcc = act(m.n * m.N);
    g.ddt = act(m.n * m.E), g.dsout = act(m.n * m.E);
    if (be.cuda_workspaces) {
      g.conv_workspace =
          al.take<float>(causal_conv1d_silu_backward_workspace_floats(m.B, m.L, m.E, m.K));
      g.scan_workspace =
          al.take<float>(selective_scan_backward_workspace_floats({m.B, m.L, m.E, m.N}));
    }
  }
  if (kinds.attention) {
    g.dq = act(m.n * m.Hh), g.do_ = act(m.n * m.Hh);
    g.dk = act(m.n * m.Gh), g.dv = act(m.n * m.Gh);
    if (c.rope) g.dq_rot = act(m.n * m.Hh), g.dk_rot = act(m.n * m.Gh);
  }
  if (c.kv_source_layer >= 0) g.dk_shared = act(m.n * m.Gh), g.dv_shared = act(m.n * m.Gh);
  if (kinds.gmu) {
    g.dg = act(m.n * m.E), g.dgm = act(m.n * m.E);
    if (c.normalized_gmu && be.gmu_pre_norm) g.dgated = act(m.n * m.E);
    g.dmemory = act(m.n * m.E);
  }
}

template void allocate_activations<float, float>(const ModelConfig&, const ActivationShape&,
                                                 const RecomputePlan&, const BackendPlan&, Arena&,
                                                 GraphActivations<float, float>&);
template void allocate_activations<double, double>(const ModelConfig&, const ActivationShape&,
                                                   const RecomputePlan&, const BackendPlan&,
                                                   Arena&, GraphActivations<double, double>&);
template void allocate_activations<bf16, float>(const ModelConfig&, const ActivationShape&,
                                                const RecomputePlan&, const BackendPlan&, Arena&,
                                                GraphActivations<bf16, float>&);

int64_t gpu_activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                             const RecomputePlan& recompute, bool tp, int64_t nr) {
  Arena measure = Arena::measuring("activations");
  GpuActivations dry;
  allocate_activations(config, {B, L, nr < 0 ? B * L : nr, tp, 1}, recompute, kCudaPlan, measure,
                       dry);
  return static_cast<int64_t>(measure.used);
}

int64_t gpu_recompute_headroom(int64_t total_bytes) {
  return std::max<int64_t>(int64_t(2) << 30, total_bytes / 100 * 3);
}

}  // namespace sambay
