// Where every parameter lives: one flat buffer holds all parameters (and, in the same layout,
// their gradients and optimizer moments), so the optimizer, clipping, checkpoints and
// data-parallel reductions see one contiguous range. Names follow the module structure
// ("layers.7.mixer.in_proj.weight"); shapes are [out, in] for projections.
#pragma once

#include "core/model_config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

// How the optimizer and muP++ treat a parameter.
enum class ParamClass {
  embedding,      // the embedding and an untied output head (vector-like under muP++)
  hidden_matrix,  // projection matrices
  vector,         // norms, biases, A_log, D, lambda vectors, conv (vector-like under muP++)
};

enum class InitKind {
  normal,       // N(0, std^2)
  uniform,      // U(-bound, bound), bound = init_scale
  ones,
  zeros,
  mamba_a_log,  // A_log[e, n] = log(n + 1)
  mamba_dt_bias // inverse softplus of dt ~ log-uniform in [1e-3, 1e-1], floor 1e-4
};

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;
  ParamClass cls;
  InitKind init;
  double init_scale;  // std for normal, bound for uniform
  // A projection whose output is a residual branch (mixer out_proj, MLP fc2): the init rules
  // that scale these (GPT-2's 1 / sqrt(2 layers), optim/mup.h) find them by this.
  bool output_projection = false;
  int64_t offset;     // elements from the start of the flat buffer
  int64_t numel;
  int layer;          // -1 for embedding and final norm
  // Tensor parallelism (Megatron's column/row splits): the dimension cut into equal pieces, one
  // per TP rank (-1: every rank holds the whole tensor), and for fused tensors the sizes of the
  // parts along it ([q | k | v], [x | z], [gate | value]): each part is cut, and a rank's piece
  // is its share of every part, in order.
  int tp_dim = -1;
  std::vector<int64_t> tp_parts;
  // A whole tensor whose gradient each TP rank computes only in part (the share of its heads:
  // differential attention's lambda vectors and head norm): summed over the TP group.
  bool tp_partial_grad = false;
};

// Offsets (in elements) of one layer's parameters; -1 where the layer has none.
struct LayerOffsets {
  int64_t norm1_w = -1, norm1_b = -1, norm2_w = -1, norm2_b = -1;
  int64_t fc1_w = -1, fc2_w = -1;  // MLP: fc1 [2F, d], fc2 [d, F]
  // Mamba: in_proj [2E, d], conv [E, K], conv_b [E], x_proj [R + 2N, E], dt_proj [E, R],
  // dt_proj_b [E], A_log [E, N], D [E], out_proj [d, E].
  int64_t in_proj_w = -1, conv_w = -1, conv_b = -1, x_proj_w = -1, dt_proj_w = -1,
          dt_proj_b = -1, a_log = -1, d_skip = -1, out_proj_w = -1;
  // Attention: qkv [Hh + 2Gh, d] (cross layers: q only, [Hh, d]), bias alike; o [d, Hh], o_b [d].
  int64_t qkv_w = -1, qkv_b = -1, o_w = -1, o_b = -1;
  // Differential attention: lambda vectors [h] and the head norm weight [2h].
  int64_t lambda_q1 = -1, lambda_k1 = -1, lambda_q2 = -1, lambda_k2 = -1, head_norm_w = -1;
  // GMU: in [E, d] (W_1), out [d, E] (W_2), nGMU norm [E].
  int64_t gmu_in_w = -1, gmu_out_w = -1, gmu_norm_w = -1;
};

struct ParamLayout {
  std::vector<ParamSpec> params;
  std::vector<LayerOffsets> layers;
  int64_t embedding = -1;  // [vocab, d]; also the output head when tied
  int64_t final_norm_w = -1, final_norm_b = -1;
  int64_t readout = -1;  // [vocab, d] untied output head lm_head.weight, last in the buffer
  int64_t total = 0;     // elements in the flat buffer
};

// The layout of a validated config. Tensors come in the order embedding, layers, final norm,
// readout (an untied head adds a tensor at the end, so a tied model's offsets do not depend on
// the option). Init scales here are sambay's standard rules; make_model applies the config's
// init rule and muP++ (optim/mup.h apply_init_rules).
ParamLayout build_param_layout(const ModelConfig& c);

// Where the output head's weights [vocab, d] are: the readout, or the embedding when tied.
inline int64_t output_head_offset(const ParamLayout& layout) {
  return layout.readout >= 0 ? layout.readout : layout.embedding;
}

// Index of the parameter with this name, or -1.
int find_param(const ParamLayout& layout, const std::string& name);

// Fills params (layout.total values) from the layout's init rules. Parameter p's element j is
// element j of Philox stream (seed, p): the values do not depend on the order of filling, on T,
// or on how a parallel layout shards the tensor.
template <typename T>
void init_params(const ParamLayout& layout, T* params, uint64_t seed);

// ---- Tensor parallelism ----
// The config one of tp ranks runs: d_inner, d_ff, n_heads and n_kv_heads divided by tp (so
// build_param_layout of it is the layout of a rank's shard). Throws naming the field that tp
// does not divide (and, with differential attention, the head pairs that would be cut).
ModelConfig tensor_parallel_config(const ModelConfig& full, int tp);

// Copies rank `rank`'s pieces of full-layout values into shard-layout values (layouts of the
// same config: full and tensor_parallel_config(full, tp)).
template <typename T>
void shard_params(const ParamLayout& full, const ParamLayout& shard, const T* full_values,
                  T* shard_values, int tp, int rank);

// The inverse for one rank: writes its pieces into full_values (whole tensors held by every
// rank are written too, so any one rank's copy fills them).
template <typename T>
void unshard_params(const ParamLayout& full, const ParamLayout& shard, const T* shard_values,
                    T* full_values, int tp, int rank);

}  // namespace sambay
