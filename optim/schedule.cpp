#include "optim/schedule.h"

#include "core/check.h"

#include <cmath>
#include <numbers>

namespace sambay {

static void check_config(const ScheduleConfig& c) {
  SAMBAY_CHECK(c.warmup_steps >= 0, "warmup_steps must be >= 0, got {}", c.warmup_steps);
  if (c.kind == LrSchedule::constant) return;
  SAMBAY_CHECK(c.total_steps >= c.warmup_steps, "total_steps {} is less than warmup_steps {}",
               c.total_steps, c.warmup_steps);
  SAMBAY_CHECK(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1], got {}",
               c.min_lr_ratio);
  if (c.kind != LrSchedule::wsd) return;
  SAMBAY_CHECK(c.decay_fraction > 0 && c.decay_fraction <= 1,
               "wsd decay_fraction must be in (0, 1], got {}", c.decay_fraction);
  const double decay_start = c.total_steps * (1.0 - c.decay_fraction);
  SAMBAY_CHECK(decay_start >= double(c.warmup_steps),
               "wsd decay starts at step {} (the last {} of {} steps), inside the {} warmup steps",
               decay_start, c.decay_fraction, c.total_steps, c.warmup_steps);
}

double lr_multiplier(const ScheduleConfig& c, int64_t step) {
  check_config(c);
  SAMBAY_CHECK(step >= 0, "learning-rate schedule step must be >= 0, got {}", step);
  if (step < c.warmup_steps) return double(step) / double(c.warmup_steps);
  if (c.kind == LrSchedule::constant) return 1.0;
  if (step >= c.total_steps) return c.min_lr_ratio;

  // Here warmup_steps <= step < total_steps, so every denominator below is positive.
  const double lo = c.min_lr_ratio;
  switch (c.kind) {
    case LrSchedule::cosine: {
      const double p = double(step - c.warmup_steps) / double(c.total_steps - c.warmup_steps);
      return lo + (1.0 - lo) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
    }
    case LrSchedule::linear: {
      const double p = double(step - c.warmup_steps) / double(c.total_steps - c.warmup_steps);
      return lo + (1.0 - lo) * (1.0 - p);
    }
    case LrSchedule::wsd: {
      const double decay_start = c.total_steps * (1.0 - c.decay_fraction);
      if (step <= decay_start) return 1.0;
      const double p = (step - decay_start) / (c.total_steps - decay_start);
      return lo + (1.0 - lo) * (1.0 - p);
    }
    case LrSchedule::constant:
      break;
  }
  fail("unknown learning-rate schedule {}", static_cast<int>(c.kind));
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::constant;
  if (name == "cosine") return LrSchedule::cosine;
  if (name == "linear") return LrSchedule::linear;
  if (name == "wsd") return LrSchedule::wsd;
  fail("unknown learning-rate schedule '{}' (valid: constant, cosine, linear, wsd)", name);
}

}  // namespace sambay
