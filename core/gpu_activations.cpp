#include "core/gpu_activations.h"

#include "core/check.h"
#include "core/model_graph.h"
#include "kernels/causal_conv1d.h"
#include "kernels/selective_scan.h"

#include <algorithm>

namespace sambay {

namespace {

// Typed buffers from a device arena (or only counted, when it measures).
struct Allocator {
  Arena& arena;
  bf16* half(int64_t n) { return static_cast<bf16*>(arena.alloc(DType::bf16, {n}).data); }
  float* f32(int64_t n) { return static_cast<float*>(arena.alloc(DType::f32, {n}).data); }
  double* f64(int64_t n) { return static_cast<double*>(arena.alloc(DType::f64, {n}).data); }
  int32_t* i32(int64_t n) { return static_cast<int32_t*>(arena.alloc(DType::i32, {n}).data); }
};

// nr: the residual-stream rows this rank keeps (m.n, or m.n / tp under sequence parallelism).
void allocate_internals(const ModelConfig& c, LayerKind kind, const GraphDims& m, int64_t nr,
                        Allocator& al, GpuLayerActivations& a) {
  a.ln1_mean = al.f32(nr), a.ln1_rstd = al.f32(nr), a.a = al.half(nr * m.d);
  a.x_mid = al.half(nr * m.d);
  a.ln2_mean = al.f32(nr), a.ln2_rstd = al.f32(nr), a.a2 = al.half(nr * m.d);
  a.h = al.half(m.n * 2 * m.F), a.s = al.half(m.n * m.F);
  switch (kind) {
    case LayerKind::mamba:
      a.xin = al.half(m.n * m.E), a.z = al.half(m.n * m.E), a.xs = al.half(m.n * m.E);
      a.dl = al.half(m.n * m.R), a.bc = al.half(m.n * m.N), a.cc = al.half(m.n * m.N);
      a.dt = al.half(m.n * m.E), a.y = al.half(m.n * m.E), a.sout = al.half(m.n * m.E);
      a.scan_checkpoint = al.f32(selective_scan_checkpoint_floats({m.B, m.L, m.E, m.N}));
      break;
    case LayerKind::sliding_window:
    case LayerKind::full_attention:
    case LayerKind::cross_attention:
      a.q = al.half(m.n * m.Hh), a.o = al.half(m.n * m.Hh);
      if (kind != LayerKind::cross_attention) a.k = al.half(m.n * m.Gh), a.v = al.half(m.n * m.Gh);
      if (c.differential) {
        const DiffAttentionSavedSizes sz =
            diff_attention_saved_sizes({m.B, m.L, m.H, m.G, m.h, c.window});
        a.diff.lambda = al.f64(1);
        a.diff.a1 = al.f32(sz.a1), a.diff.a2 = al.f32(sz.a2);
        a.diff.lse1 = al.f32(sz.lse1), a.diff.lse2 = al.f32(sz.lse2), a.diff.rstd = al.f32(sz.rstd);
      } else {
        a.lse = al.f32(m.B * m.H * m.L);
      }
      break;
    case LayerKind::gmu:
      a.g = al.half(m.n * m.E), a.gm = al.half(m.n * m.E);
      if (c.normalized_gmu) a.gmu_rstd = al.f32(m.n);
      break;
  }
}

}  // namespace

void allocate_gpu_activations(const ModelConfig& c, int64_t B, int64_t L,
                              const RecomputePlan& recompute, bool tp, int64_t nr, Arena& arena,
                              GpuActivations& acts) {
  const GraphDims m = graph_dims(c, B, L);
  Allocator al{arena};
  const int n_layers = static_cast<int>(c.layers.size());
  SAMBAY_CHECK(static_cast<int>(recompute.layers.size()) == n_layers,
               "recompute plan of {} layers for model '{}' of {}", recompute.layers.size(), c.name,
               n_layers);
  acts.layers.assign(n_layers, GpuLayerActivations{});
  std::vector<GpuLayerActivations> shared(5);
  std::vector<bool> have_shared(5, false);
  for (int i = 0; i < n_layers; ++i) {
    GpuLayerActivations& a = acts.layers[i];
    a.x_in = al.half(nr * m.d);
    const int kind = static_cast<int>(c.layers[i]);
    const bool rc = recompute.layers[i];
    if (!rc) {
      allocate_internals(c, c.layers[i], m, nr, al, a);
    } else {
      if (!have_shared[kind]) allocate_internals(c, c.layers[i], m, nr, al, shared[kind]);
      have_shared[kind] = true;
      bf16* x_in = a.x_in;
      a = shared[kind];
      a.x_in = x_in;
    }
    // What other layers read must outlive the layer: the kv layer's k, v and the memory.
    if (rc && i == c.kv_source_layer) a.k = al.half(m.n * m.Gh), a.v = al.half(m.n * m.Gh);
    if (rc && i == c.memory_layer) a.y = al.half(m.n * m.E);
  }
  acts.mixer_out = al.half(nr * m.d), acts.mlp_out = al.half(nr * m.d);
  acts.final_x = al.half(nr * m.d), acts.final_out = al.half(nr * m.d);
  acts.final_mean = al.f32(nr), acts.final_rstd = al.f32(nr), acts.ce_lse = al.f32(nr);
  acts.loss = CrossEntropyPlan{nr, m.d, c.vocab, kGpuLossChunk, recompute.loss_kept_chunks};
  // 256-byte aligned (the arena's alignment), as the loss asks; bytes are a multiple of 256.
  acts.loss_workspace = al.f32(static_cast<int64_t>(cross_entropy_workspace(acts.loss).bytes / 4));
  acts.tokens = al.i32(m.n), acts.targets = al.i32(m.n), acts.doc = al.i32(m.n);
  if (tp) acts.tp_partial = al.f32(m.n * std::max(m.d, m.R + 2 * m.N));
  if (nr < m.n) acts.region_in = al.half(m.n * m.d), acts.tp_scalars = al.f64(2);

  GpuBackwardScratch& g = acts.grad;
  g.dres = al.half(nr * m.d), g.dbranch = al.half(m.n * m.d), g.da = al.half(m.n * m.d);
  g.dh = al.half(m.n * 2 * m.F), g.ds = al.half(m.n * m.F);
  const LayerKindsPresent kinds = layer_kinds_present(c);
  if (kinds.mamba) {
    g.dxin = al.half(m.n * m.E), g.dz = al.half(m.n * m.E), g.dxs = al.half(m.n * m.E);
    g.ddl = al.half(m.n * m.R), g.dbc = al.half(m.n * m.N), g.dcc = al.half(m.n * m.N);
    g.ddt = al.half(m.n * m.E), g.dsout = al.half(m.n * m.E);
    g.conv_workspace = al.f32(causal_conv1d_silu_backward_workspace_floats(m.B, m.L, m.E, m.K));
    g.scan_workspace = al.f32(selective_scan_backward_workspace_floats({m.B, m.L, m.E, m.N}));
  }
  if (kinds.attention) {
    g.dq = al.half(m.n * m.Hh), g.do_ = al.half(m.n * m.Hh);
    g.dk = al.half(m.n * m.Gh), g.dv = al.half(m.n * m.Gh);
    if (c.rope) g.dq_rot = al.half(m.n * m.Hh), g.dk_rot = al.half(m.n * m.Gh);
  }
  if (c.kv_source_layer >= 0) g.dk_shared = al.half(m.n * m.Gh), g.dv_shared = al.half(m.n * m.Gh);
  if (kinds.gmu) g.dg = al.half(m.n * m.E), g.dgm = al.half(m.n * m.E), g.dmemory = al.half(m.n * m.E);
}

int64_t gpu_activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                             const RecomputePlan& recompute, bool tp, int64_t nr) {
  Arena measure = Arena::measuring("activations");
  GpuActivations dry;
  allocate_gpu_activations(config, B, L, recompute, tp, nr < 0 ? B * L : nr, measure, dry);
  return static_cast<int64_t>(measure.used);
}

int64_t gpu_recompute_headroom(int64_t total_bytes) {
  return std::max<int64_t>(int64_t(2) << 30, total_bytes / 100 * 3);
}

}  // namespace sambay
