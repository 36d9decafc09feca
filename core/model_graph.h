// Facts about the model graph that the CPU model (core/model.cpp) and the GPU model
// (core/gpu_model.cpp) share: the sizes of a micro-batch, which layer kinds occur, the masks and
// constants each layer uses, and parameter lookup by offset.
#pragma once

#include "core/model_config.h"

#include <cmath>
#include <cstdint>

namespace sambay {

// Sizes of one micro-batch of [B, L] through a config: n = B * L rows, and the widths of
// docs/model.md's notation (Hh, Gh: query and key/value widths, heads times head dim).
struct GraphDims {
  int64_t n, B, L, d, E, N, R, K, H, G, h, Hh, Gh, F;
};

inline GraphDims graph_dims(const ModelConfig& c, int64_t B, int64_t L) {
  return {B * L,      B,          L,          c.d_model, c.d_inner,
          c.d_state,  c.dt_rank,  c.d_conv,   c.n_heads, c.n_kv_heads,
          c.head_dim, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.d_ff};
}

// Which kinds of mixer the pattern holds (the backward scratch is planned only for those).
struct LayerKindsPresent {
  bool mamba = false, attention = false, gmu = false;
};

inline LayerKindsPresent layer_kinds_present(const ModelConfig& c) {
  LayerKindsPresent p;
  for (LayerKind k : c.layers) {
    p.mamba |= k == LayerKind::mamba;
    p.gmu |= k == LayerKind::gmu;
    p.attention |= k != LayerKind::mamba && k != LayerKind::gmu;
  }
  return p;
}

// Differential attention's lambda_init uses the global layer index (docs/model.md).
inline double lambda_init_for_layer(int layer) { return 0.8 - 0.6 * std::exp(-0.3 * layer); }

// The attention window of a layer: 0 (full causal) unless it is a sliding-window layer.
inline int64_t window_of(const ModelConfig& c, LayerKind kind) {
  return kind == LayerKind::sliding_window ? c.window : 0;
}

// A parameter (or its gradient) by offset in the flat buffer; null for an absent one (-1).
template <typename T>
T* param_at(T* base, int64_t offset) {
  return offset < 0 ? nullptr : base + offset;
}

}  // namespace sambay
