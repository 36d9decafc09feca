// Models of a depth-scaling study, with width and heads derived from the depth (docs/model.md,
// "Presets"): the same rules as core's depth-16 presets (sambay-da-1b and kin), for
// any depth. With width_per_depth = w: d = w * depth, heads = depth of head dim w (so H h = d),
// key/value heads = depth / 2, MLP width 4d, Mamba inner width 2d, state 16, dt rank d / 16
// rounded up; the layer pattern is the family's for `depth` layers.
#pragma once

#include "core/model_config.h"
#include "tools/sweep/budget.h"
#include "core/config_file.h"

#include <cstdint>
#include <string>

namespace sambay::sweep {

// family: sambay-da, sambay, samba-yoco or transformerpp. depth: a multiple of 4 (the SambaY
// pattern's halves; the Transformer++ baseline accepts any depth >= 2, even). vocab 0 keeps
// the family's vocabulary (Phi-4-mini's 200064). Throws naming the bad argument.
ModelConfig depth_scaled_model(const std::string& family, int64_t depth,
                               int64_t width_per_depth = 128, int64_t vocab = 0);

// The core preset the family's fields (norm, biases, RoPE, ...) come from: "<family>-1b".
std::string depth_family_preset(const std::string& family);

// The paper's families as ArchScale defines them: "archscale-<family>" (core's
// archscale_model; <family>: sambay, sambay-da, samba-yoco, transformerpp).
bool is_archscale_family(const std::string& family);
std::string archscale_core_family(const std::string& family);  // "sambay" of "archscale-sambay"
// The preset a run's config names before its model fields: archscale-<family>-d16[-tied].
std::string archscale_family_preset(const std::string& family, bool tied);
// The model of depth D from a spec's [depth] keys (tied; for other scales width_per_depth,
// head_dim, vocab, window) with the μP++ base of `base` (d0, hd0). Throws naming the key.
ModelConfig depth_archscale_model(const std::string& family, int64_t depth, const ConfigFile& spec,
                                  const ArchScaleBase& base);

}  // namespace sambay::sweep
