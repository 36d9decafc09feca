// The SambaY model on the CPU: its parameters, and the model graph (core/graph.h) run on the CPU
// backend (core/cpu_backend.h) in T = float or double; double is the fp64 reference.
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

#include "core/activations.h"
#include "core/model_config.h"
#include "core/model_graph.h"
#include "core/param_layout.h"
#include "core/recompute_plan.h"
#include "kernels/cross_entropy.h"
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

// Planned activation memory for micro-batches of [B, L] (core/activations.h; under context
// parallelism, this rank's L = seq_len / cp positions of each sample:
// parallel/context_parallel.h take_context_chunks).
template <typename T>
using Activations = GraphActivations<T, T>;

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
