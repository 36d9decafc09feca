#include "core/param_layout.h"

#include "core/check.h"
#include "core/philox.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace sambay {

namespace {

constexpr double kInitStd = 0.02;  // projections and embedding (GPT-2 / Phi convention)

struct LayoutBuilder {
  ParamLayout layout;

  int64_t add(std::string name, std::vector<int64_t> shape, ParamClass cls, InitKind init,
              double scale, int layer) {
    int64_t numel = 1;
    for (int64_t s : shape) numel *= s;
    const int64_t offset = layout.total;
    ParamSpec p;
    p.name = std::move(name), p.shape = std::move(shape), p.cls = cls, p.init = init;
    p.init_scale = scale, p.offset = offset, p.numel = numel, p.layer = layer;
    layout.params.push_back(std::move(p));
    layout.total += numel;
    return offset;
  }

  // Marks the parameter added last as writing a residual branch.
  void output_projection() { layout.params.back().output_projection = true; }

  // Marks the parameter added last as split along dim (parts: see ParamSpec::tp_parts).
  void split(int dim, std::vector<int64_t> parts = {}) {
    ParamSpec& p = layout.params.back();
    p.tp_dim = dim;
    p.tp_parts = parts.empty() ? std::vector<int64_t>{p.shape[dim]} : std::move(parts);
  }
  void partial_grad() { layout.params.back().tp_partial_grad = true; }
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

ParamLayout build_param_layout(const ModelConfig& c) {
  LayoutBuilder b;
  const int64_t d = c.d_model, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  const int64_t h = c.head_dim, Hh = c.n_heads * h, Gh = c.n_kv_heads * h;
  const bool layernorm = c.norm == NormKind::layernorm;
  using PC = ParamClass;
  using IK = InitKind;

  b.layout.embedding =
      b.add("embedding.weight", {c.vocab, d}, PC::embedding, IK::normal, kInitStd, -1);
  for (int i = 0; i < static_cast<int>(c.layers.size()); ++i) {
    LayerOffsets o;
    const std::string p = fmt::format("layers.{}.", i);
    auto add = [&](const std::string& name, std::vector<int64_t> shape, PC cls, IK init,
                   double scale) { return b.add(p + name, std::move(shape), cls, init, scale, i); };
    o.norm1_w = add("norm1.weight", {d}, PC::vector, IK::ones, 0);
    if (layernorm) o.norm1_b = add("norm1.bias", {d}, PC::vector, IK::zeros, 0);
    switch (c.layers[i]) {
      case LayerKind::mamba: {
        o.in_proj_w = add("mixer.in_proj.weight", {2 * E, d}, PC::hidden_matrix, IK::normal,
                          kInitStd);
        b.split(0, {E, E});
        // Depthwise conv: PyTorch's default Conv1d bound 1/sqrt(fan_in), fan_in = K.
        const double conv_bound = 1.0 / std::sqrt(static_cast<double>(K));
        o.conv_w = add("mixer.conv1d.weight", {E, K}, PC::vector, IK::uniform, conv_bound);
        b.split(0);
        o.conv_b = add("mixer.conv1d.bias", {E}, PC::vector, IK::uniform, conv_bound);
        b.split(0);
        o.x_proj_w = add("mixer.x_proj.weight", {R + 2 * N, E}, PC::hidden_matrix, IK::normal,
                         kInitStd);
        b.split(1);
        // Mamba's dt_proj init: U(-R^-1/2, R^-1/2), so delta starts near softplus(dt_bias).
        o.dt_proj_w = add("mixer.dt_proj.weight", {E, R}, PC::hidden_matrix, IK::uniform,
                          1.0 / std::sqrt(static_cast<double>(R)));
        b.split(0);
        o.dt_proj_b = add("mixer.dt_proj.bias", {E}, PC::vector, IK::mamba_dt_bias, 0);
        b.split(0);
        o.a_log = add("mixer.A_log", {E, N}, PC::vector, IK::mamba_a_log, 0);
        b.split(0);
        o.d_skip = add("mixer.D", {E}, PC::vector, IK::ones, 0);
        b.split(0);
        o.out_proj_w = add("mixer.out_proj.weight", {d, E}, PC::hidden_matrix, IK::normal,
                           kInitStd);
        b.split(1);
        b.output_projection();
        break;
      }
      case LayerKind::sliding_window:
      case LayerKind::full_attention:
      case LayerKind::cross_attention: {
        const bool cross = c.layers[i] == LayerKind::cross_attention;
        const int64_t rows = cross ? Hh : Hh + 2 * Gh;
        const std::vector<int64_t> parts =
            cross ? std::vector<int64_t>{Hh} : std::vector<int64_t>{Hh, Gh, Gh};
        o.qkv_w = add(cross ? "mixer.q_proj.weight" : "mixer.qkv_proj.weight", {rows, d},
                      PC::hidden_matrix, IK::normal, kInitStd);
        b.split(0, parts);
        if (c.attention_bias) {
          o.qkv_b = add(cross ? "mixer.q_proj.bias" : "mixer.qkv_proj.bias", {rows}, PC::vector,
                        IK::zeros, 0);
          b.split(0, parts);
        }
        o.o_w = add("mixer.out_proj.weight", {d, Hh}, PC::hidden_matrix, IK::normal, kInitStd);
        b.split(1);
        b.output_projection();
        if (c.attention_bias) o.o_b = add("mixer.out_proj.bias", {d}, PC::vector, IK::zeros, 0);
        if (c.differential) {
          // lambda vectors start small so lambda starts near lambda_init (Diff Transformer).
          o.lambda_q1 = add("mixer.lambda_q1", {h}, PC::vector, IK::normal, 0.1);
          b.partial_grad();
          o.lambda_k1 = add("mixer.lambda_k1", {h}, PC::vector, IK::normal, 0.1);
          b.partial_grad();
          o.lambda_q2 = add("mixer.lambda_q2", {h}, PC::vector, IK::normal, 0.1);
          b.partial_grad();
          o.lambda_k2 = add("mixer.lambda_k2", {h}, PC::vector, IK::normal, 0.1);
          b.partial_grad();
          o.head_norm_w = add("mixer.head_norm.weight", {2 * h}, PC::vector, IK::ones, 0);
          b.partial_grad();
        }
        break;
      }
      case LayerKind::gmu:
        o.gmu_in_w = add("mixer.in_proj.weight", {E, d}, PC::hidden_matrix, IK::normal, kInitStd);
        b.split(0);
        if (c.normalized_gmu) {
          o.gmu_norm_w = add("mixer.norm.weight", {E}, PC::vector, IK::ones, 0);
          b.split(0);
        }
        o.gmu_out_w =
            add("mixer.out_proj.weight", {d, E}, PC::hidden_matrix, IK::normal, kInitStd);
        b.split(1);
        b.output_projection();
        break;
    }
    o.norm2_w = add("norm2.weight", {d}, PC::vector, IK::ones, 0);
    if (layernorm) o.norm2_b = add("norm2.bias", {d}, PC::vector, IK::zeros, 0);
    o.fc1_w = add("mlp.fc1.weight", {2 * c.d_ff, d}, PC::hidden_matrix, IK::normal, kInitStd);
    b.split(0, {c.d_ff, c.d_ff});
    o.fc2_w = add("mlp.fc2.weight", {d, c.d_ff}, PC::hidden_matrix, IK::normal, kInitStd);
    b.split(1);
    b.output_projection();
    b.layout.layers.push_back(o);
  }
  b.layout.final_norm_w = b.add("final_norm.weight", {d}, PC::vector, IK::ones, 0, -1);
  if (layernorm)
    b.layout.final_norm_b = b.add("final_norm.bias", {d}, PC::vector, IK::zeros, 0, -1);
  if (!c.tied_embedding)
    b.layout.readout =
        b.add("lm_head.weight", {c.vocab, d}, PC::embedding, IK::normal, kInitStd, -1);
  return b.layout;
}

int find_param(const ParamLayout& layout, const std::string& name) {
  for (size_t i = 0; i < layout.params.size(); ++i)
    if (layout.params[i].name == name) return static_cast<int>(i);
  return -1;
}

template <typename T>
void init_params(const ParamLayout& layout, T* params, uint64_t seed) {
  for (const ParamSpec& p : layout.params) {
    T* w = params + p.offset;
    const uint64_t stream = fnv1a(p.name);
    switch (p.init) {
      case InitKind::normal:
        fill_normal(w, p.numel, 0.0, p.init_scale, seed, stream);
        break;
      case InitKind::uniform:
        fill_uniform(w, p.numel, -p.init_scale, p.init_scale, seed, stream);
        break;
      case InitKind::ones:
        for (int64_t j = 0; j < p.numel; ++j) w[j] = T(1);
        break;
      case InitKind::zeros:
        for (int64_t j = 0; j < p.numel; ++j) w[j] = T(0);
        break;
      case InitKind::mamba_a_log: {
        const int64_t n_state = p.shape[1];
        for (int64_t j = 0; j < p.numel; ++j) w[j] = static_cast<T>(std::log(double(j % n_state + 1)));
        break;
      }
      case InitKind::mamba_dt_bias:
        for (int64_t j = 0; j < p.numel; ++j) {
          const double u = philox_uniform(seed, stream, j);
          double dt = std::exp(std::log(1e-3) + u * (std::log(1e-1) - std::log(1e-3)));
          dt = std::max(dt, 1e-4);
          w[j] = static_cast<T>(dt + std::log(-std::expm1(-dt)));  // softplus^-1(dt)
        }
        break;
    }
  }
}

template void init_params<float>(const ParamLayout&, float*, uint64_t);
template void init_params<double>(const ParamLayout&, double*, uint64_t);

ModelConfig tensor_parallel_config(const ModelConfig& full, int tp) {
  if (tp < 1) fail("tensor-parallel size must be at least 1, got {}", tp);
  auto divide = [&](int64_t value, const char* field, int64_t unit) {
    if (value % (tp * unit) != 0)
      fail("model config '{}': {} = {} is not divisible by tensor-parallel size {}{}", full.name,
           field, value, tp,
           unit > 1 ? " times 2 (differential attention keeps head pairs on one rank)" : "");
    return value / tp;
  };
  ModelConfig c = full;
  const int64_t pair = full.differential ? 2 : 1;
  c.d_inner = divide(full.d_inner, "d_inner", 1);
  c.d_ff = divide(full.d_ff, "d_ff", 1);
  c.n_heads = divide(full.n_heads, "n_heads", pair);
  c.n_kv_heads = divide(full.n_kv_heads, "n_kv_heads", pair);
  return c;
}

namespace {

// Calls copy(full_offset, shard_offset, count) for every contiguous run of rank `rank`'s piece
// of parameter f (full layout) held at parameter s (shard layout).
template <typename Copy>
void for_each_piece(const ParamSpec& f, const ParamSpec& s, int tp, int rank, Copy copy) {
  SAMBAY_CHECK(f.name == s.name, "shard layout does not match: '{}' vs '{}'", f.name, s.name);
  if (f.tp_dim < 0) {
    copy(f.offset, s.offset, f.numel);
    return;
  }
  const int64_t cols = f.shape.size() > 1 ? f.shape[1] : 1;
  if (f.tp_dim == 1) {  // every row: its rank-th run of cols / tp values
    const int64_t piece = cols / tp;
    for (int64_t r = 0; r < f.shape[0]; ++r)
      copy(f.offset + r * cols + rank * piece, s.offset + r * piece, piece);
    return;
  }
  int64_t part_start = 0, shard_row = 0;  // rows: the rank-th slice of every part
  for (int64_t part : f.tp_parts) {
    const int64_t rows = part / tp;
    copy(f.offset + (part_start + rank * rows) * cols, s.offset + shard_row * cols, rows * cols);
    part_start += part, shard_row += rows;
  }
}

}  // namespace

template <typename T>
void shard_params(const ParamLayout& full, const ParamLayout& shard, const T* full_values,
                  T* shard_values, int tp, int rank) {
  SAMBAY_CHECK(full.params.size() == shard.params.size(), "shard layout has {} tensors, not {}",
               shard.params.size(), full.params.size());
  for (size_t i = 0; i < full.params.size(); ++i)
    for_each_piece(full.params[i], shard.params[i], tp, rank,
                   [&](int64_t f, int64_t s, int64_t n) {
                     std::copy(full_values + f, full_values + f + n, shard_values + s);
                   });
}

template <typename T>
void unshard_params(const ParamLayout& full, const ParamLayout& shard, const T* shard_values,
                    T* full_values, int tp, int rank) {
  SAMBAY_CHECK(full.params.size() == shard.params.size(), "shard layout has {} tensors, not {}",
               shard.params.size(), full.params.size());
  for (size_t i = 0; i < full.params.size(); ++i)
    for_each_piece(full.params[i], shard.params[i], tp, rank,
                   [&](int64_t f, int64_t s, int64_t n) {
                     std::copy(shard_values + s, shard_values + s + n, full_values + f);
                   });
}

#define SAMBAY_SHARD_PARAMS(T)                                                                 \
  template void shard_params<T>(const ParamLayout&, const ParamLayout&, const T*, T*, int, int); \
  template void unshard_params<T>(const ParamLayout&, const ParamLayout&, const T*, T*, int, int);
SAMBAY_SHARD_PARAMS(float)
SAMBAY_SHARD_PARAMS(double)
#undef SAMBAY_SHARD_PARAMS

}  // namespace sambay
