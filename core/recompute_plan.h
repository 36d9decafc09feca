// Activation recompute: what the backward recomputes instead of keeping it from the forward, and
// how `--recompute auto` picks the least recompute whose activations fit the memory there is.
//
// Two things can be recomputed, both giving bit-identical losses and gradients (the same kernels
// on the same inputs):
//   - a layer's internals: only its input is kept, and the backward re-runs the layer's forward
//     before its backward. The recomputed layers of one kind share one set of internals, so the
//     first one of a kind saves nothing and every further one saves a set;
//   - on the GPU, the loss's logits per vocabulary chunk (kernels/cross_entropy.h): a kept chunk
//     holds its bf16 logits [n, chunk] from forward to backward, a chunk not kept is recomputed
//     by one more GEMM (2 n chunk d FLOPs). The CPU loss keeps no logits.
#pragma once

#include "core/model_config.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sambay {

// The `--recompute` option: none, auto (the default) or all; the old booleans true and false
// (and 1/0, yes/no, on/off) still mean all and none.
enum class RecomputeMode { none, auto_choice, all };

// Throws naming `option` and listing the values for anything else.
RecomputeMode parse_recompute_mode(const std::string& value, const std::string& option);
const char* recompute_mode_name(RecomputeMode mode);

// The GPU loss's vocabulary rows per chunk.
constexpr int64_t kGpuLossChunk = 8192;
// ceil(vocab / kGpuLossChunk): the GPU loss's chunks.
int64_t loss_chunks(const ModelConfig& c);

struct RecomputePlan {
  std::vector<bool> layers;      // per layer: internals recomputed in backward
  int64_t loss_kept_chunks = 0;  // GPU: loss chunks whose logits are kept, 0 .. loss_chunks
  bool operator==(const RecomputePlan&) const = default;
};

// Everything kept (every loss chunk too), or everything recomputed (no loss chunk kept).
RecomputePlan no_recompute(const ModelConfig& c);
RecomputePlan full_recompute(const ModelConfig& c);
RecomputePlan uniform_recompute(const ModelConfig& c, bool recompute);

// One line: which layers of each kind are recomputed and, with gpu_loss, the loss chunks kept,
// e.g. "recomputed layers: mamba 0, 2, 4 (3 of 16), gmu none (0 of 8); loss logits kept: 25 of
// 25 chunks".
std::string describe_recompute(const ModelConfig& c, const RecomputePlan& plan, bool gpu_loss);

// Forward FLOPs per micro-batch [B, L] that the plan adds to a step (its recomputed layers, and
// the loss chunks whose logits GEMM runs again).
double recompute_flops(const ModelConfig& c, int64_t B, int64_t L, const RecomputePlan& plan);

struct RecomputeChoice {
  RecomputePlan plan;
  int64_t bytes = 0;  // its activations
  bool fits = true;   // false: not even full recompute fits the budget (plan = full recompute)
  std::string log;    // what was chosen and why, one line per fact (for the run's log)
};

// bytes_of(plan): the activation bytes of a plan for the micro-batch (exact: the memory plan's
// own count). The candidates go from no recompute to full recompute, each adding one unit to the
// last: units are taken class by class, the class that saves the most bytes per recomputed FLOP
// first (a layer kind's layers in index order; the loss chunks from the last one back). The
// first candidate within `budget` is chosen: the least recompute that fits, in that order.
RecomputeChoice choose_recompute(const ModelConfig& c, int64_t B, int64_t L, int64_t budget,
                                 const std::function<int64_t(const RecomputePlan&)>& bytes_of);

// The option resolved for one run: none and all as they are; auto chooses within `budget`
// (where the device's memory is known: the GPU), or keeps everything when no budget is given
// (the CPU backend: host memory is not planned, so auto means none there).
RecomputeChoice resolve_recompute(RecomputeMode mode, const ModelConfig& c, int64_t B, int64_t L,
                                  std::optional<int64_t> budget,
                                  const std::function<int64_t(const RecomputePlan&)>& bytes_of);

}  // namespace sambay
