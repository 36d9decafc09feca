#include "core/recompute_plan.h"

#include "core/check.h"
#include "core/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdlib>

namespace sambay {

namespace {

constexpr std::array<LayerKind, 5> kKinds = {LayerKind::mamba, LayerKind::sliding_window,
                                             LayerKind::full_attention,
                                             LayerKind::cross_attention, LayerKind::gmu};

// "34.93 GiB", or "3.2 MiB" below a GiB.
std::string bytes_text(int64_t bytes) {
  if (std::abs(bytes) >= int64_t(1) << 30)
    return fmt::format("{:.2f} GiB", double(bytes) / double(int64_t(1) << 30));
  return fmt::format("{:.1f} MiB", double(bytes) / double(int64_t(1) << 20));
}

// "0-3, 8, 10" from sorted indices.
std::string index_list(const std::vector<int>& idx) {
  std::string s;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j + 1 < idx.size() && idx[j + 1] == idx[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += j > i + 1 ? fmt::format("{}-{}", idx[i], idx[j])
                   : j == i + 1 ? fmt::format("{}, {}", idx[i], idx[j]) : fmt::format("{}", idx[i]);
    i = j + 1;
  }
  return s;
}

std::vector<int> layers_of(const ModelConfig& c, LayerKind kind) {
  std::vector<int> idx;
  for (int i = 0; i < static_cast<int>(c.layers.size()); ++i)
    if (c.layers[i] == kind) idx.push_back(i);
  return idx;
}

// One step of the candidate sequence: a kind's layers, or the loss's chunks.
struct UnitClass {
  std::string name;
  std::vector<int> layers;  // empty for the loss
  double bytes_per_flop = 0;
};

}  // namespace

RecomputeMode parse_recompute_mode(const std::string& value, const std::string& option) {
  if (value == "none" || value == "false" || value == "0" || value == "no" || value == "off")
    return RecomputeMode::none;
  if (value == "all" || value == "true" || value == "1" || value == "yes" || value == "on")
    return RecomputeMode::all;
  if (value == "auto") return RecomputeMode::auto_choice;
  fail("option --{}: '{}' is not none, auto or all (the old true and false mean all and none)",
       option, value);
}

const char* recompute_mode_name(RecomputeMode mode) {
  switch (mode) {
    case RecomputeMode::none: return "none";
    case RecomputeMode::auto_choice: return "auto";
    case RecomputeMode::all: return "all";
  }
  return "?";
}

int64_t loss_chunks(const ModelConfig& c) {
  return (c.vocab + kGpuLossChunk - 1) / kGpuLossChunk;
}

RecomputePlan uniform_recompute(const ModelConfig& c, bool recompute) {
  RecomputePlan p;
  p.layers.assign(c.layers.size(), recompute);
  p.loss_kept_chunks = recompute ? 0 : loss_chunks(c);
  return p;
}
RecomputePlan no_recompute(const ModelConfig& c) { return uniform_recompute(c, false); }
RecomputePlan full_recompute(const ModelConfig& c) { return uniform_recompute(c, true); }

std::string describe_recompute(const ModelConfig& c, const RecomputePlan& plan, bool gpu_loss) {
  std::string kinds;
  for (LayerKind kind : kKinds) {
    const std::vector<int> all = layers_of(c, kind);
    if (all.empty()) continue;
    std::vector<int> chosen;
    for (int i : all)
      if (plan.layers[i]) chosen.push_back(i);
    if (!kinds.empty()) kinds += ", ";
    kinds += fmt::format("{} {} ({} of {})", layer_kind_name(kind),
                         chosen.empty() ? "none" : index_list(chosen), chosen.size(), all.size());
  }
  std::string s = "recomputed layers: " + kinds;
  if (gpu_loss)
    s += fmt::format("; loss logits kept: {} of {} chunks", plan.loss_kept_chunks, loss_chunks(c));
  return s;
}

double recompute_flops(const ModelConfig& c, int64_t B, int64_t L, const RecomputePlan& plan) {
  double flops = 0;
  for (int i = 0; i < static_cast<int>(c.layers.size()); ++i)
    if (plan.layers[i]) flops += layer_forward_flops_per_token(c, i, L) * double(B * L);
  // The chunks not kept: the last vocabulary rows from the first one not kept.
  const int64_t recomputed_rows =
      std::max<int64_t>(0, c.vocab - plan.loss_kept_chunks * kGpuLossChunk);
  flops += 2.0 * double(B * L) * double(recomputed_rows) * double(c.d_model);
  return flops;
}

RecomputeChoice choose_recompute(const ModelConfig& c, int64_t B, int64_t L, int64_t budget,
                                 const std::function<int64_t(const RecomputePlan&)>& bytes_of) {
  const double tokens = double(B * L);
  const RecomputePlan none = no_recompute(c);
  const int64_t none_bytes = bytes_of(none);

  // The classes, ordered by the bytes one more unit saves per recomputed FLOP once the class has
  // started: the first recomputed layer of a kind moves into the kind's shared set and the first
  // chunk not kept into the shared slot, saving nothing; each further one frees a set or a slot.
  // So the saving is measured over the first two units (or the only one).
  std::vector<UnitClass> classes;
  for (LayerKind kind : kKinds) {
    UnitClass u{layer_kind_name(kind), layers_of(c, kind)};
    if (u.layers.empty()) continue;
    RecomputePlan probe = none;
    const size_t probe_layers = std::min<size_t>(2, u.layers.size());
    for (size_t k = 0; k < probe_layers; ++k) probe.layers[u.layers[k]] = true;
    const double saved = double(none_bytes - bytes_of(probe));
    u.bytes_per_flop = saved / (layer_forward_flops_per_token(c, u.layers[0], L) * tokens);
    classes.push_back(std::move(u));
  }
  if (none.loss_kept_chunks > 0) {
    RecomputePlan probe = none;
    probe.loss_kept_chunks -= std::min<int64_t>(2, none.loss_kept_chunks);
    const double saved = double(none_bytes - bytes_of(probe));
    UnitClass u{"loss chunk", {}};
    u.bytes_per_flop =
        saved / (2.0 * tokens * double(std::min(kGpuLossChunk, c.vocab)) * double(c.d_model));
    classes.push_back(std::move(u));
  }
  std::stable_sort(classes.begin(), classes.end(), [](const UnitClass& a, const UnitClass& b) {
    return a.bytes_per_flop > b.bytes_per_flop;
  });

  RecomputeChoice choice;
  choice.plan = none, choice.bytes = none_bytes, choice.fits = none_bytes <= budget;
  std::string lines = fmt::format(
      "  candidates from the least recompute (each adds to the one before; chosen: the first "
      "within the budget of {}):\n    none: {}{}\n",
      bytes_text(budget), bytes_text(none_bytes), choice.fits ? " (chosen)" : "");
  RecomputePlan plan = none;
  for (const UnitClass& u : classes) {
    const int64_t units = u.layers.empty() ? none.loss_kept_chunks : int64_t(u.layers.size());
    int64_t chosen_at = -1, last_bytes = 0;
    for (int64_t k = 0; k < units; ++k) {
      if (u.layers.empty())
        --plan.loss_kept_chunks;
      else
        plan.layers[u.layers[k]] = true;
      last_bytes = bytes_of(plan);
      if (!choice.fits && last_bytes <= budget) {
        choice.plan = plan, choice.bytes = last_bytes, choice.fits = true;
        chosen_at = k;
      }
    }
    const std::string what = u.layers.empty()
                                 ? fmt::format("the loss's {} chunks", units)
                                 : fmt::format("{} layers {}", u.name, index_list(u.layers));
    const std::string chosen =
        chosen_at >= 0 ? fmt::format(" (chosen after {} of {}: {})", chosen_at + 1, units,
                                     bytes_text(choice.bytes))
                       : "";
    lines += fmt::format("    + {} ({:.2e} bytes saved per FLOP): down to {}{}\n", what,
                         u.bytes_per_flop, bytes_text(last_bytes), chosen);
  }
  if (!choice.fits) {
    choice.plan = plan, choice.bytes = bytes_of(plan);
    lines += fmt::format("    not even full recompute fits: {} over the budget\n",
                         bytes_text(choice.bytes - budget));
  }
  const double step_flops = training_flops_per_token(c, L) * tokens;
  choice.log = lines + fmt::format(
                           "  chosen: {}; {} of activations, recompute adds {:.1f}% to the step's "
                           "FLOPs",
                           describe_recompute(c, choice.plan, true), bytes_text(choice.bytes),
                           100 * recompute_flops(c, B, L, choice.plan) / step_flops);
  return choice;
}

RecomputeChoice resolve_recompute(RecomputeMode mode, const ModelConfig& c, int64_t B, int64_t L,
                                  std::optional<int64_t> budget,
                                  const std::function<int64_t(const RecomputePlan&)>& bytes_of) {
  if (mode == RecomputeMode::auto_choice && budget)
    return choose_recompute(c, B, L, *budget, bytes_of);
  RecomputeChoice choice;
  choice.plan = uniform_recompute(c, mode == RecomputeMode::all);
  choice.bytes = bytes_of(choice.plan);
  choice.fits = !budget || choice.bytes <= *budget;
  choice.log = mode == RecomputeMode::auto_choice
                   ? "  auto without a memory budget keeps everything: none (host memory is "
                     "not planned)"
                   : fmt::format("  {} as configured: {} of activations",
                                 recompute_mode_name(mode), bytes_text(choice.bytes));
  return choice;
}

}  // namespace sambay
