#include "core/model.h"

#include "core/check.h"
#include "core/cpu_backend.h"
#include "core/graph.h"
#include "optim/mup.h"

#include <cmath>

namespace sambay {

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
  const ModelSplit& split = model.split;
  const int cp = split.cp ? split.cp->size : 1;
  SAMBAY_CHECK(cp == 1 || (L % 2 == 0 && L / 2 >= model.config.d_conv - 1),
               "context parallelism: a rank's {} positions must be two chunks of at least the "
               "conv's halo of {}",
               L, model.config.d_conv - 1);
  const RowSplit rows = row_split(split.tp, split.sequence_parallel, B * L);
  const ActivationShape shape{B, L, rows.nr, rows.tp != nullptr, cp};
  Arena measure = Arena::measuring("activations");
  Activations<T> dry;
  allocate_activations(model.config, shape, recompute, kCpuPlan, measure, dry);
  Activations<T> acts;
  acts.B = B, acts.L = L, acts.recompute = recompute;
  acts.arena = Arena(Device::cpu, measure.used, "activations");
  allocate_activations(model.config, shape, recompute, kCpuPlan, acts.arena, acts);
  return acts;
}

int64_t activation_bytes(const ModelConfig& config, int64_t B, int64_t L,
                         const RecomputePlan& recompute, size_t element_size) {
  Arena measure = Arena::measuring("activations");
  const ActivationShape shape{B, L, B * L, false, 1};
  if (element_size == sizeof(double)) {
    Activations<double> dry;
    allocate_activations(config, shape, recompute, kCpuPlan, measure, dry);
  } else {
    Activations<float> dry;
    allocate_activations(config, shape, recompute, kCpuPlan, measure, dry);
  }
  return static_cast<int64_t>(measure.used);
}

template <typename T>
ForwardResult model_forward(const Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                            const int32_t* targets, const int32_t* doc) {
  CpuBackend<T> be(model, acts, nullptr, tokens, targets, doc);
  return graph::forward(be);
}

template <typename T>
void model_backward(Model<T>& model, Activations<T>& acts, const int32_t* tokens,
                    const int32_t* targets, const int32_t* doc, T grad_scale) {
  CpuBackend<T> be(model, acts, model.grads.data(), tokens, targets, doc);
  graph::backward(be, grad_scale, {});
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
