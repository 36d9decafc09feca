#include "tools/sweep/depth_family.h"

#include "core/check.h"

#include <fmt/format.h>

namespace sambay::sweep {

std::string depth_family_preset(const std::string& family) {
  if (family == "sambay-da" || family == "sambay" || family == "samba-yoco" ||
      family == "transformerpp")
    return family + "-1b";
  fail("unknown depth family '{}' (valid: sambay-da, sambay, samba-yoco, transformerpp)", family);
}

ModelConfig depth_scaled_model(const std::string& family, int64_t depth, int64_t w,
                               int64_t vocab) {
  ModelConfig c = model_preset(depth_family_preset(family));
  const bool transformer = family == "transformerpp";
  SAMBAY_CHECK(w > 0, "width_per_depth must be positive, got {}", w);
  if (transformer)
    SAMBAY_CHECK(depth >= 2 && depth % 2 == 0, "depth must be even and >= 2, got {}", depth);
  else
    SAMBAY_CHECK(depth >= 4 && depth % 4 == 0,
                 "depth must be a multiple of 4 for the {} pattern, got {}", family, depth);
  c.name = fmt::format("{}-depth{}", family, depth);
  c.d_model = w * depth;
  if (vocab > 0) c.vocab = vocab;
  c.n_heads = depth;
  c.n_kv_heads = depth / 2;
  c.head_dim = w;
  c.d_ff = 4 * c.d_model;
  if (transformer) {
    c.layers.assign(depth, LayerKind::full_attention);
    return c;
  }
  c.d_inner = 2 * c.d_model;
  c.d_state = 16;
  c.d_conv = 4;
  c.dt_rank = (c.d_model + 15) / 16;
  set_sambay_pattern(c, depth, /*gmu=*/family != "samba-yoco");
  return c;
}

}  // namespace sambay::sweep
