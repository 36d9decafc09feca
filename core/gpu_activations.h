// The GPU model's activation memory for micro-batches [B, L]: what the forward keeps for the
// backward (bf16 activations, fp32 statistics), the backward's scratch, the micro-batch and the
// loss's workspace, all in one arena planned before the first step. A recompute plan
// (core/recompute_plan.h) says which layers keep only their input (their internals then share one
// set per layer kind, refilled when the backward re-runs the layer) and how many of the loss's
// vocabulary chunks keep their logits. Planning needs no GPU: gpu_activation_bytes counts the
// bytes of a plan on any machine.
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

// One layer's stored activations on the device. bf16 activations, fp32 statistics.
struct GpuLayerActivations {
  bf16* x_in = nullptr;
  float *ln1_mean = nullptr, *ln1_rstd = nullptr;
  bf16* a = nullptr;
  bf16* x_mid = nullptr;
  float *ln2_mean = nullptr, *ln2_rstd = nullptr;
  bf16 *a2 = nullptr, *h = nullptr, *s = nullptr;
  // Mamba: xs = silu(conv(xin)) (the conv output is recomputed in backward), scan checkpoint.
  bf16 *xin = nullptr, *z = nullptr, *xs = nullptr, *dl = nullptr, *bc = nullptr, *cc = nullptr,
       *dt = nullptr, *y = nullptr, *sout = nullptr;
  float* scan_checkpoint = nullptr;
  // Attention.
  bf16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  DiffAttentionSaved diff{};
  // GMU.
  bf16 *g = nullptr, *gm = nullptr;
  float* gmu_rstd = nullptr;
};

struct GpuBackwardScratch {
  bf16 *dres = nullptr, *dbranch = nullptr, *da = nullptr, *dh = nullptr, *ds = nullptr;
  bf16 *dxin = nullptr, *dz = nullptr, *dxs = nullptr, *ddl = nullptr, *dbc = nullptr,
       *dcc = nullptr, *ddt = nullptr, *dsout = nullptr;
  bf16 *dq = nullptr, *dk = nullptr, *dv = nullptr, *do_ = nullptr, *dq_rot = nullptr,
       *dk_rot = nullptr;
  bf16 *dg = nullptr, *dgm = nullptr;
  bf16 *dk_shared = nullptr, *dv_shared = nullptr, *dmemory = nullptr;
  float *conv_workspace = nullptr, *scan_workspace = nullptr;
};

struct GpuActivations {
  int64_t B = 0, L = 0;
  RecomputePlan recompute;  // the layers recomputed in backward, the loss chunks kept
  Arena memory;
  std::vector<GpuLayerActivations> layers;
  GpuBackwardScratch grad;
  bf16 *mixer_out = nullptr, *mlp_out = nullptr, *final_x = nullptr, *final_out = nullptr;
  float *final_mean = nullptr, *final_rstd = nullptr, *ce_lse = nullptr;
  // The loss over this rank's residual rows (kernels/cross_entropy.h): its chunks, those kept, and
  // its workspace (the kept bf16 logits from forward to backward, the shared chunk's slot, dh).
  CrossEntropyPlan loss;
  void* loss_workspace = nullptr;
  int32_t *tokens = nullptr, *targets = nullptr, *doc = nullptr;  // the micro-batch, on the device
  // Under TP (a group of several ranks): fp32 partial sums before their reduction over the group,
  // [n, max(d, R + 2N)]; null otherwise.
  float* tp_partial = nullptr;
  // Under SP: a region's input gathered whole, [n, d] bf16, and the loss sum and valid count
  // summed over the TP group (2 values); null otherwise. The residual-stream buffers (x_in,
  // x_mid, the normed a and a2, their statistics, mixer_out, mlp_out, final_*, ce_lse, dres)
  // then hold this rank's n / tp rows.
  bf16* region_in = nullptr;
  double* tp_scalars = nullptr;
};

// Allocates the buffers of `acts` for [B, L] from `arena` (a measuring arena only counts them).
// tp: a TP group of several ranks runs the model (its fp32 partial-sum buffer is planned); nr:
// the residual-stream rows this rank keeps (B L, or B L / tp under sequence parallelism: the
// residual stream, the norms and the loss then hold nr rows, and the regions read their normed
// input gathered whole into region_in). Throws for a plan of the wrong number of layers or loss
// chunks.
void allocate_gpu_activations(const ModelConfig& c, int64_t B, int64_t L,
                              const RecomputePlan& recompute, bool tp, int64_t nr, Arena& arena,
                              GpuActivations& acts);

// Bytes the activations need (nothing allocated); one rank unless tp and nr say otherwise.
int64_t gpu_activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                             const RecomputePlan& recompute, bool tp = false, int64_t nr = -1);

// Device memory that auto recompute leaves free beyond the activations, of a GPU of total_bytes:
// the cuBLASLt workspace, the kernels' stream-ordered scratch (norm partials, the embedding's
// sort), NCCL's buffers (connected at the first collective) and fragmentation. 2 GiB, or 3% of
// the GPU when that is more.
int64_t gpu_recompute_headroom(int64_t total_bytes);

}  // namespace sambay
