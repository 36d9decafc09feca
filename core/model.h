// The SambaY model on the CPU: forward and hand-written backward of the whole network.
//
// One micro-batch is tokens [B, L] with next-token targets [B, L] (negative = ignored) and an
// optional document id per token [B, L] (variable-length training: documents packed in a row
// neither attend to each other nor share scan or conv state).
//
// Activations live in one arena planned for (B, L) before the first step. For a layer planned for
// recompute (core/recompute_plan.h), only its input is kept and backward re-runs the layer's
// forward before its backward; both ways run the same code on the same inputs, so gradients are
// bit-identical whichever layers are recomputed.
#pragma once

#include "core/arena.h"
#include "core/model_config.h"
#include "core/param_layout.h"
#include "core/recompute_plan.h"
#include "kernels/cross_entropy.h"
#include "kernels/diff_attention.h"
#include "parallel/communicator.h"

#include <cstdint>
#include <vector>

namespace sambay {

// How one rank's share of the model is cut (parallel/process_grid.h builds the groups).
// Tensor parallelism splits Mamba and the GMU by inner channels, attention by heads and the MLP
// by its intermediate width (ParamSpec::tp_dim); each region's output is summed over the TP
// group. Sequence parallelism (with TP) also splits the residual stream, the norms and the loss
// by rows: rank r keeps rows [r n / tp, (r + 1) n / tp) of the n = B L rows, gathered on entry
// to a region and reduce-scattered on exit, so those activations shrink by the TP degree.
struct ModelSplit {
  const Communicator* tp = nullptr;  // tensor-parallel group; null: whole tensors
  bool sequence_parallel = false;
  const Communicator* cp = nullptr;  // context-parallel group; null: whole sequences
};

template <typename T>
struct Model {
  ModelConfig config;       // what this rank runs: the configured model or its TP shard
  ModelConfig full_config;  // the model as configured
  ParamLayout layout;       // of config
  std::vector<T> params;  // layout.total values
  std::vector<T> grads;   // same layout; backward adds into it
  double residual_scale = 1;  // each block's output is multiplied by this before the residual add
  double logit_scale = 1;     // output logits = logit_scale * <h, output head row>
  double attention_scale = 1;  // attention scores = attention_scale * <q, k> (make_model sets it)
  // How the loss treats each logit: exactly, or rounded to bf16 as the GPU model stores it (the
  // GPU model's tests compare against the CPU model on the GPU's function).
  LogitRounding logit_rounding = LogitRounding::exact;
  ModelSplit split;
};

// Validates the config, lays out and initialises the parameters, zeroes the gradients.
template <typename T>
Model<T> make_model(const ModelConfig& config, uint64_t seed);

// This rank's shard of make_model(config, seed) under `split`: the same values, cut as
// ParamSpec::tp_dim says (so any layout starts from the single-rank model's weights).
template <typename T>
Model<T> make_model_shard(const ModelConfig& config, uint64_t seed, const ModelSplit& split);

// Sums over the TP group the gradients of whole tensors that each TP rank computed only in part
// (its heads' share, and under sequence parallelism its rows' share). Call once per step, after
// the last micro-batch's backward and before gradients are reduced over data parallelism.
template <typename T>
void reduce_tensor_parallel_grads(Model<T>& model);

// One layer's stored activations (pointers into the activation arena; null where the layer
// kind has none). n = B * L rows; under sequence parallelism the residual-stream tensors (x_in,
// the norms' statistics and outputs a, a2, x_mid) hold only this rank's nr = n / tp rows, noted
// [nr, d]. The internals of every recomputed layer of a kind point at one shared set, refilled
// when backward re-runs the layer.
template <typename T>
struct LayerActivations {
  T* x_in = nullptr;  // [nr, d] the layer's input (always kept)
  T *ln1_mean = nullptr, *ln1_rstd = nullptr, *a = nullptr;  // [nr], [nr], [nr, d]
  T* x_mid = nullptr;                                        // [nr, d] after the mixer
  T *ln2_mean = nullptr, *ln2_rstd = nullptr, *a2 = nullptr;
  T *h = nullptr, *s = nullptr;  // MLP: fc1 output [n, 2F], SwiGLU output [n, F]
  // Mamba: x, z halves of in_proj [n, E]; conv output, its SiLU [n, E]; delta low-rank [n, R];
  // B, C [n, N]; dt before bias [n, E]; pre-gate y and gated output [n, E].
  T *xin = nullptr, *z = nullptr, *xc = nullptr, *xs = nullptr, *dl = nullptr, *bc = nullptr,
    *cc = nullptr, *dt = nullptr, *y = nullptr, *sout = nullptr;
  // Attention: q [n, Hh], k, v [n, Gh] (self layers), o [n, Hh], lse [B, H, L] (plain).
  T *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *lse = nullptr;
  DiffAttentionSaved diff{};
  // Mamba under context parallelism: the scan state carried into each of this rank's 2B runs
  // (its two chunks of every sample), and each run's decay (kernels/selective_scan.h ScanCarry),
  // [2B, E, N] each.
  T *scan_state_in = nullptr, *scan_decay = nullptr;
  // GMU: g = x W_1 [n, E]; gm = m * silu(g) [n, E], for the nGMU normed, with the gated value
  // before the norm in gated [n, E] and the norm's rstd [n].
  T *g = nullptr, *gm = nullptr, *gated = nullptr, *gmu_rstd = nullptr;
};

// Gradient buffers used while backward walks the layers; reused by every layer.
template <typename T>
struct BackwardScratch {
  T* dres = nullptr;     // [nr, d] gradient of the residual stream
  T* dbranch = nullptr;  // [n, d] residual_scale * dres, the gradient of a block's output
  T* da = nullptr;       // [n, d] gradient of a norm's output (this rank's part under TP)
  T *dh = nullptr, *ds = nullptr;  // MLP [n, 2F], [n, F]
  T *dxin = nullptr, *dz = nullptr, *dxc = nullptr, *dxs = nullptr, *ddl = nullptr,
    *dbc = nullptr, *dcc = nullptr, *ddt = nullptr, *dsout = nullptr;  // Mamba
  T *dq = nullptr, *dk = nullptr, *dv = nullptr, *do_ = nullptr;       // attention
  T *dq_rot = nullptr, *dk_rot = nullptr;  // RoPE: gradients before the rotation's transpose
  T *dg = nullptr, *dgm = nullptr, *dgated = nullptr;  // GMU
  // Shared across layers: cross-attention layers add into the kv layer's key/value gradients,
  // GMU layers into the memory's gradient; the source layer consumes them later in backward.
  T *dk_shared = nullptr, *dv_shared = nullptr, *dmemory = nullptr;
};

// Planned activation memory for micro-batches of [B, L] (under context parallelism, this rank's
// L = seq_len / cp positions of each sample: parallel/context_parallel.h take_context_chunks).
template <typename T>
struct Activations {
  int64_t B = 0, L = 0;
  RecomputePlan recompute;  // its layers (the CPU loss keeps no logits: loss chunks unused)
  Arena arena;
  std::vector<LayerActivations<T>> layers;
  BackwardScratch<T> grad;
  // [n, d] block outputs before the residual add (under TP, this rank's partial sums).
  T *mixer_out = nullptr, *mlp_out = nullptr;
  T* region_in = nullptr;  // [n, d] a norm's output gathered over sequence-parallel ranks
  // Context parallelism (parallel/context_parallel.h): this rank's L positions of a sample are
  // two chunks of h = L / 2, run as 2B rows of h; a whole sample has Lw = cp L positions.
  std::vector<int32_t> doc_whole;  // [B, Lw] document ids of the whole samples (empty: no ids)
  std::vector<int32_t> conv_doc;   // [2B, K - 1 + h] ids of the conv input below (empty: none)
  T *k_whole = nullptr, *v_whole = nullptr;    // [B, Lw, Gh] keys and values of whole samples
  T *dk_whole = nullptr, *dv_whole = nullptr;  // [B, Lw, Gh] their gradients from this rank
  T *conv_in = nullptr, *conv_out = nullptr;   // [2B, K - 1 + h, E] each run after the last
  T* conv_dx = nullptr;  // K - 1 positions of the chunk before it; output; input gradient
  T *scan_state = nullptr, *scan_dstate = nullptr;  // [2B, E, N] scratch of the scan's carry
  T *final_x = nullptr, *final_mean = nullptr, *final_rstd = nullptr, *final_out = nullptr;
  T* ce_lse = nullptr;  // [n] the loss's log-sum-exp per row
};

template <typename T>
Activations<T> plan_activations(const Model<T>& model, int64_t B, int64_t L,
                                const RecomputePlan& recompute);
// Every layer recomputed, or none.
template <typename T>
Activations<T> plan_activations(const Model<T>& model, int64_t B, int64_t L, bool recompute) {
  return plan_activations(model, B, L, uniform_recompute(model.config, recompute));
}

// Bytes the activation arena needs for this config and micro-batch shape (nothing allocated).
int64_t activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                         const RecomputePlan& recompute, size_t element_size);
inline int64_t activation_bytes(const ModelConfig& config, int64_t B, int64_t L, bool recompute,
                                size_t element_size) {
  return activation_bytes(config, B, L, uniform_recompute(config, recompute), element_size);
}

struct ForwardResult {
  double loss_sum = 0;     // sum over valid targets of -log p(target)
  int64_t valid_rows = 0;  // number of valid targets
};

// Runs the model and the loss. tokens, targets: [B, L]; doc: [B, L] or nullptr.
template <typename T>
ForwardResult model_forward(const Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                            const int32_t* targets, const int32_t* doc);

// Adds grad_scale * d(loss_sum)/d(params) into model.grads, using what the last
// model_forward on `acts` stored (call it with the same inputs).
template <typename T>
void model_backward(Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                    const int32_t* targets, const int32_t* doc, T grad_scale);

// The most likely next token after context[0, len) (greedy decoding): the forward over the
// context right-padded to the planned length (acts.B must be 1; the model is causal, so the
// padding cannot change the last context position), then the output head's logits there.
template <typename T>
int32_t greedy_next_token(const Model<T>& model, Activations<T>& acts, const int32_t* context,
                          int64_t len);

// Model FLOPs per token for training (forward + backward, matrix products and attention
// scores/values), the numerator of MFU. Counted exactly from the shapes for sequence length L.
// sambay's convention ("exact") in logs and sweep results.
double training_flops_per_token(const ModelConfig& config, int64_t L);
// One layer's forward FLOPs per token (its matrix products and attention), the same count.
double layer_forward_flops_per_token(const ModelConfig& config, int layer, int64_t L);

// ArchScale's conventions (the SambaY paper's code), per training token at sequence length L,
// to compare with its MFU and compute axes:
//   estimate_flops (speed_monitor.py): 3 (2 N + 4 layers d L) with N every parameter (the
//   embedding, and an untied readout, included) and every layer counted as full attention of
//   width d, whatever its kind, head count or window;
//   6 N (its scaling plots' C = 6 N T): N the non-embedding parameters.
double archscale_estimated_flops_per_token(const ModelConfig& config, int64_t L);
double six_n_flops_per_token(const ModelConfig& config);

}  // namespace sambay
