// The model graph's activation memory for micro-batches [B, L] (core/graph.h), planned once for
// both backends: what the forward keeps for the backward, the backward's scratch and, per
// backend, what its fused ops keep (BackendPlan), all in one arena sized before the first step.
// A = the activations' element type, S = the statistics' (norm mean/rstd, log-sum-exp, scan
// state): the CPU backend plans <T, T>, the CUDA backend <bf16, float>.
//
// A recompute plan (core/recompute_plan.h) says which layers keep only their input (their
// internals then share one set per layer kind, refilled when the backward re-runs the layer) and,
// on the GPU, how many of the loss's vocabulary chunks keep their logits. Planning needs no GPU:
// gpu_activation_bytes counts the bytes of the GPU's plan on any machine.
//
// n = B * L rows. Under sequence parallelism the residual-stream tensors (x_in, the norms'
// statistics and outputs a, a2, x_mid, final_*, ce_lse, dres) hold only this rank's nr = n / tp
// rows, noted [nr, d]; a region's input is gathered whole into region_in. Under context
// parallelism (parallel/context_parallel.h) the rank's L positions of a sample are two chunks
// of L / 2, run as 2B rows: B and L below are then 2B and L / 2 (core/model_graph.h local_dims).
#pragma once

#include "core/arena.h"
#include "core/bf16.h"
#include "core/model_config.h"
#include "core/recompute_plan.h"
#include "kernels/cross_entropy.h"
#include "kernels/diff_attention.h"

#include <cstdint>
#include <vector>

namespace sambay {

// One layer's stored activations (null where the layer kind or the backend has none).
template <typename A, typename S>
struct LayerActivations {
  A* x_in = nullptr;                                         // [nr, d] input (always kept)
  S *ln1_mean = nullptr, *ln1_rstd = nullptr;                // [nr] (mean: LayerNorm only)
  A* a = nullptr;                                            // [nr, d] first norm's output
  A* x_mid = nullptr;                                        // [nr, d] after the mixer
  S *ln2_mean = nullptr, *ln2_rstd = nullptr;
  A* a2 = nullptr;
  A *h = nullptr, *s = nullptr;  // MLP: fc1 output [n, 2F], SwiGLU output [n, F]
  // Mamba: x, z halves of in_proj [n, E]; conv output (CPU: conv and SiLU run apart) and its
  // SiLU [n, E]; delta low-rank [n, R]; B, C [n, N]; dt before bias [n, E]; pre-gate y and gated
  // output [n, E]; the CUDA scan's chunk checkpoints.
  A *xin = nullptr, *z = nullptr, *xc = nullptr, *xs = nullptr, *dl = nullptr, *bc = nullptr,
    *cc = nullptr, *dt = nullptr, *y = nullptr, *sout = nullptr;
  float* scan_checkpoint = nullptr;
  // Attention: q [n, Hh], k, v [n, Gh] (self layers), o [n, Hh], lse [B, H, L] (plain).
  A *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  S* lse = nullptr;
  DiffAttentionSaved diff{};  // differential attention's saved maps (S)
  // Mamba under context parallelism: the scan state carried into each of the rank's runs and
  // each run's decay (kernels/selective_scan.h ScanCarry), [B, E, N] each.
  S *scan_state_in = nullptr, *scan_decay = nullptr;
  // GMU: g = x W_1 [n, E]; gm = m * silu(g) [n, E], for the nGMU normed; the gated value before
  // the norm (CPU: gate and norm run apart) [n, E] and the norm's rstd [n].
  A *g = nullptr, *gm = nullptr, *gated = nullptr;
  S* gmu_rstd = nullptr;
};

// Gradient buffers used while backward walks the layers; reused by every layer.
template <typename A>
struct BackwardScratch {
  A* dres = nullptr;     // [nr, d] gradient of the residual stream
  A* dbranch = nullptr;  // [n, d] residual_scale * dres, the gradient of a block's output
  A* da = nullptr;       // [n, d] gradient of a norm's output (this rank's part under TP)
  A *dh = nullptr, *ds = nullptr;  // MLP [n, 2F], [n, F]
  A *dxin = nullptr, *dz = nullptr, *dxc = nullptr, *dxs = nullptr, *ddl = nullptr,
    *dbc = nullptr, *dcc = nullptr, *ddt = nullptr, *dsout = nullptr;  // Mamba
  A *dq = nullptr, *dk = nullptr, *dv = nullptr, *do_ = nullptr;       // attention
  A *dq_rot = nullptr, *dk_rot = nullptr;  // RoPE: gradients before the rotation's transpose
  A *dg = nullptr, *dgm = nullptr, *dgated = nullptr;  // GMU
  // Shared across layers: cross-attention layers add into the kv layer's key/value gradients,
  // GMU layers into the memory's gradient; the source layer consumes them later in backward.
  A *dk_shared = nullptr, *dv_shared = nullptr, *dmemory = nullptr;
  // The CUDA conv's and scan's backward workspaces.
  float *conv_workspace = nullptr, *scan_workspace = nullptr;
};

template <typename A, typename S>
struct GraphActivations {
  int64_t B = 0, L = 0;  // the micro-batch as planned (whole B; this rank's L under CP)
  RecomputePlan recompute;  // its layers; its loss chunks on the GPU (the CPU loss keeps no logits)
  Arena arena;
  std::vector<LayerActivations<A, S>> layers;
  BackwardScratch<A> grad;
  // Block outputs before the residual add: [n, d] (under TP this rank's partial sums), or [nr, d]
  // where the backend keeps the partials in tp_partial.
  A *mixer_out = nullptr, *mlp_out = nullptr;
  A *final_x = nullptr, *final_out = nullptr;
  S *final_mean = nullptr, *final_rstd = nullptr, *ce_lse = nullptr;  // ce_lse: the loss's lse
  // The GPU loss over this rank's rows (kernels/cross_entropy.h): its chunks, those kept, and
  // its workspace (the kept bf16 logits from forward to backward, the shared chunk's slot, dh).
  CrossEntropyPlan loss;
  void* loss_workspace = nullptr;
  int32_t *tokens = nullptr, *targets = nullptr, *doc = nullptr;  // the micro-batch on the GPU
  // Under TP on the GPU: fp32 partial sums before their reduction, [n, max(d, R + 2N)].
  float* tp_partial = nullptr;
  // Under SP: a region's input gathered whole [n, d]; on the GPU also the loss sum and valid
  // count summed over the TP group (2 values).
  A* region_in = nullptr;
  double* tp_scalars = nullptr;
  // Context parallelism: a whole sample has Lw = cp * 2 * L positions (L: a run's).
  std::vector<int32_t> doc_whole;  // [B / 2, Lw] document ids of the whole samples (empty: none)
  std::vector<int32_t> conv_doc;   // [B, K - 1 + L] ids of the conv input below (empty: none)
  A *k_whole = nullptr, *v_whole = nullptr;    // [B / 2, Lw, Gh] keys, values of whole samples
  A *dk_whole = nullptr, *dv_whole = nullptr;  // their gradients from this rank's queries
  A* conv_halo = nullptr;  // [B, K - 1, E] the K - 1 positions before each run (or their grad)
  // [B, K - 1 + L, E] each run after its halo: conv input; output; input gradient.
  A *conv_in = nullptr, *conv_out = nullptr, *conv_dx = nullptr;
  S *scan_state = nullptr, *scan_dstate = nullptr;  // [B, E, N] the scan's carry scratch
};

// What a backend's own ops keep or need beyond the graph's buffers.
struct BackendPlan {
  bool conv_output = false;  // conv and SiLU run apart: the conv's output xc and its gradient
  bool gmu_pre_norm = false;  // the nGMU's gate and norm run apart: gated and its gradient
  bool cuda_workspaces = false;  // the CUDA scan's checkpoints, scan and conv backward workspaces
  bool fp32_partials = false;  // TP partial sums in fp32 (tp_partial), block outputs [nr, d]
  bool device_batch = false;   // the micro-batch on the device and the chunked bf16-logit loss
};
inline constexpr BackendPlan kCpuPlan{true, true, false, false, false};
inline constexpr BackendPlan kCudaPlan{false, false, true, true, true};

// This rank's share of a micro-batch [B, L]: nr residual-stream rows (B L, or B L / tp under
// sequence parallelism), tp: a TP group of several ranks, cp: context-parallel ranks.
struct ActivationShape {
  int64_t B = 0, L = 0, nr = 0;
  bool tp = false;
  int cp = 1;
};

// Allocates the buffers of `acts` from `arena` (a measuring arena only counts them). Throws for
// a plan of the wrong number of layers or loss chunks.
template <typename A, typename S>
void allocate_activations(const ModelConfig& c, const ActivationShape& shape,
                          const RecomputePlan& recompute, const BackendPlan& backend, Arena& arena,
                          GraphActivations<A, S>& acts);

// The CUDA backend's activations.
using GpuActivations = GraphActivations<bf16, float>;
using GpuLayerActivations = LayerActivations<bf16, float>;

// Bytes the GPU's activations need (nothing allocated); one rank unless tp and nr say otherwise.
int64_t gpu_activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                             const RecomputePlan& recompute, bool tp = false, int64_t nr = -1);

// Device memory that auto recompute leaves free beyond the activations, of a GPU of total_bytes:
// the cuBLASLt workspace, the kernels' stream-ordered scratch (norm partials, the embedding's
// sort), NCCL's buffers (connected at the first collective) and fragmentation. 2 GiB, or 3% of
// the GPU when that is more.
int64_t gpu_recompute_headroom(int64_t total_bytes);

}  // namespace sambay
