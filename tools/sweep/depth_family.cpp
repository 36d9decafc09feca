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

bool is_archscale_family(const std::string& family) {
  return family.rfind("archscale-", 0) == 0;
}

std::string archscale_core_family(const std::string& family) {
  if (!is_archscale_family(family))
    fail("'{}' is not an ArchScale family (archscale-<family>, <family>: {})", family,
         archscale_family_names());
  const std::string core = family.substr(10);
  archscale_aspect_ratio(core);  // throws listing the valid names
  return core;
}

std::string archscale_family_preset(const std::string& family, bool tied) {
  return fmt::format("archscale-{}-d16{}", archscale_core_family(family), tied ? "-tied" : "");
}

ModelConfig depth_archscale_model(const std::string& family, int64_t depth, const ConfigFile& spec,
                                  const ArchScaleBase& base) {
  ArchScaleShape shape;
  shape.tied = spec.get_bool("depth.tied", false);
  shape.aspect_ratio = spec.get_int("depth.width_per_depth", 0);
  shape.head_dim = spec.get_int("depth.head_dim", 128);
  shape.base_depth = base.d0;
  shape.base_head_dim = base.hd0;
  ModelConfig c = archscale_model(archscale_core_family(family), depth, shape);
  if (shape.aspect_ratio > 0 || shape.head_dim != 128 || spec.has("depth.vocab") ||
      spec.has("depth.window"))
    c.name = fmt::format("{}-depth{}", family, depth);  // not the paper's shape
  if (spec.has("depth.vocab")) c.vocab = spec.get_int("depth.vocab", 0);
  if (spec.has("depth.window")) c.window = spec.get_int("depth.window", 0);
  validate_model_config(c, spec.source + ": [depth]");
  return c;
}

}  // namespace sambay::sweep
