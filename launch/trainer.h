// The training loop: data, model, AdamW with muP++ multipliers, schedule, clipping, gradient
// accumulation, validation, logs (console + metrics.jsonl) in the run directory.
#pragma once

#include "launch/train_config.h"

namespace sambay {

// Trains as configured; returns the process exit code.
int run_training(const TrainConfig& config);

}  // namespace sambay
