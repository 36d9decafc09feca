// Facts about the model graph (core/graph.h) that its plan and its backends share: the sizes of a
// micro-batch, where a rank stands in it, which layer kinds occur, the masks and constants each
// layer uses, and parameter lookup by offset.
#pragma once

#include "core/check.h"
#include "core/model_config.h"
#include "parallel/communicator.h"

#include <cmath>
#include <cstdint>
#include <functional>

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

// The dims the graph runs on for a micro-batch [B, L] of this rank: under context parallelism
// (cp ranks) the rank's positions are 2B runs of L / 2 (its two chunks of every sample,
// parallel/context_parallel.h), each an independent row for the per-position and per-run ops.
inline GraphDims local_dims(const ModelConfig& c, int64_t B, int64_t L, int cp) {
  return cp > 1 ? graph_dims(c, 2 * B, L / 2) : graph_dims(c, B, L);
}

// Where this rank stands in its tensor-parallel group for a micro-batch of n rows: all of them,
// or under sequence parallelism rows [row0, row0 + nr) with nr = n / tp.
struct RowSplit {
  const Communicator* tp = nullptr;  // the TP group when it has several ranks; null: one rank
  int rank = 0;
  bool sp = false;   // sequence parallel
  int64_t nr = 0;    // residual-stream rows this rank keeps (n, or n / tp under SP)
  int64_t row0 = 0;  // the first of them
};

// tp: the tensor-parallel group (null or of size 1: one rank).
inline RowSplit row_split(const Communicator* tp, bool sequence_parallel, int64_t n) {
  RowSplit r;
  r.nr = n;
  if (!tp || tp->size == 1) return r;
  r.tp = tp, r.rank = tp->rank, r.sp = sequence_parallel;
  if (r.sp) {
    SAMBAY_CHECK(n % tp->size == 0,
                 "sequence parallelism needs B * L = {} rows divisible by tensor-parallel size {}",
                 n, tp->size);
    r.nr = n / tp->size, r.row0 = r.rank * r.nr;
  }
  return r;
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

struct ForwardResult {
  double loss_sum = 0;     // sum over valid targets of -log p(target)
  int64_t valid_rows = 0;  // number of valid targets
};

// Told, after each layer's backward and once more at the end with 0, that the gradients from flat
// offset `first` to the end of the layout are complete for this backward (their work enqueued;
// the layout runs embedding, layers 0..N-1, final norm, and backward walks it from the end): a
// caller can start reducing them while the rest runs.
using GradsReady = std::function<void(int64_t first)>;

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
