// Learning-rate schedules as a multiplier of the peak learning rate, by optimizer step.
//   step counts from 0. Every schedule first warms up linearly: multiplier = step / warmup_steps,
//   reaching 1 at step warmup_steps (warmup_steps = 0: no warmup). Then
//   constant: 1 for ever (total_steps, min_lr_ratio and decay_fraction are unused);
//   cosine:   min + (1 - min) * (1 + cos(pi * p)) / 2, p = (step - warmup) / (total - warmup);
//   linear:   min + (1 - min) * (1 - p);
//   wsd:      warmup-stable-decay: 1 until the last decay_fraction of total_steps, then linear
//             from 1 down to min at total_steps (the decay window may not overlap the warmup);
//   and min_lr_ratio from total_steps on, for the three decaying schedules.
// Bad configurations throw when the multiplier is asked for.
#pragma once

#include <cstdint>
#include <string>

namespace sambay {

enum class LrSchedule { constant, cosine, linear, wsd };

struct ScheduleConfig {
  LrSchedule kind;
  int64_t warmup_steps;
  int64_t total_steps;
  double min_lr_ratio;    // final multiplier, in [0, 1]
  double decay_fraction;  // wsd only: share of total_steps spent decaying, in (0, 1]
};

double lr_multiplier(const ScheduleConfig& config, int64_t step);

// "constant", "cosine", "linear" or "wsd"; anything else throws listing these names.
LrSchedule parse_lr_schedule(const std::string& name);

}  // namespace sambay
