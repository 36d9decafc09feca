// Models of a depth-scaling study (model.md, "Scaling studies vary depth, with width and heads
// derived from depth"): the same rules as core's depth-16 presets (sambay-da-1b and kin), for
// any depth. With width_per_depth = w: d = w * depth, heads = depth of head dim w (so H h = d),
// key/value heads = depth / 2, MLP width 4d, Mamba inner width 2d, state 16, dt rank d / 16
// rounded up; the layer pattern is the family's for `depth` layers.
#pragma once

#include "core/model_config.h"

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

}  // namespace sambay::sweep
