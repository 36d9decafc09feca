#include "optim/mup.h"

#include "core/check.h"

#include <cmath>

namespace sambay {

static void check_config(const MupConfig& c) {
  SAMBAY_CHECK(c.base_width >= 1 && c.width >= 1 && c.depth >= 1 && c.base_depth >= 0,
               "bad μP++ config: base_width {} width {} depth {} base_depth {}", c.base_width,
               c.width, c.depth, c.base_depth);
}

static double width_ratio(const MupConfig& c) { return double(c.base_width) / double(c.width); }

static double depth_lr_factor(const MupConfig& c) {
  return c.base_depth == 0 ? 1.0 : std::sqrt(double(c.base_depth) / double(c.depth));
}

MupConfig mup_config_for(const ModelConfig& model) {
  return {model.mup_base_width > 0, model.mup_base_width, model.d_model, model.n_layers()};
}

double mup_lr_multiplier(ParamClass cls, const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  const double width_factor = cls == ParamClass::hidden_matrix ? width_ratio(c) : 1.0;
  return width_factor * depth_lr_factor(c);
}

double mup_weight_decay_multiplier(ParamClass cls, const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return cls == ParamClass::hidden_matrix ? 1.0 : 0.0;
}

double mup_init_std(ParamClass cls, int64_t fan_in, const MupConfig& c, double base_std) {
  if (!c.enabled || cls != ParamClass::hidden_matrix) return base_std;
  check_config(c);
  SAMBAY_CHECK(fan_in >= 1, "μP++ init: fan_in must be >= 1, got {}", fan_in);
  return base_std * std::sqrt(double(c.base_width) / double(fan_in));
}

double mup_logit_scale(const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return width_ratio(c);
}

double mup_residual_scale(const MupConfig& c) {
  if (!c.enabled) return 1.0;
  check_config(c);
  return 1.0 / std::sqrt(2.0 * double(c.depth));
}

}  // namespace sambay
