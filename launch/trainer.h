// The training loop: data, model, AdamW with muP++ multipliers, schedule, clipping, gradient
// accumulation, validation, logs (console + metrics.jsonl) in the run directory, checkpoints
// (out_dir/checkpoints, every --save_every steps and at the end), --resume, and preemption
// (SIGUSR1/SIGTERM: checkpoint, then exit with kExitRequeue, launch/preemption.h).
#pragma once

#include "launch/train_config.h"

namespace sambay {

// Trains as configured; returns the process exit code (0, or kExitRequeue after a signal).
int run_training(const TrainConfig& config);

}  // namespace sambay
