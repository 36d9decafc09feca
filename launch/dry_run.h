// `sambay train --dry_run`: everything a run decides before its first step, without training.
// It resolves the config and the parallel layout, plans memory per rank (weights, gradients,
// optimizer state, activations with the recompute the run would choose, host RSS), prints the
// FLOPs per token and the tokens/s the measured single-GPU profile predicts, and checks that
// every file and directory the run needs is usable: the data (opened and checked as the trainer
// does), the run directory and checkpoints directory (writable), and the checkpoint it would
// resume from (its manifest, index and rank files verified; the tensor data is verified when a
// run loads it). It exits 0, or 2 naming what is wrong, and writes nothing into the run.
#pragma once

#include "io/sampler.h"
#include "launch/train_config.h"
#include "parallel/process_grid.h"

#include <optional>
#include <string>

namespace sambay {

struct DryRunInputs {
  const TrainConfig& cfg;
  const ProcessGrid& grid;
  const Sampler& sampler;
  bool gpu = false;                     // the run would train on GPUs
  std::string device;                   // the visible device, or what is assumed
  std::optional<double> gpu_memory;     // bytes per GPU (the visible one, or the assumed H200)
  bool assumed_device = false;          // no GPU visible: the plan is for another machine
  std::string checkpoints_dir;
};

// Prints the plan on rank 0 and returns the exit code (0); fails naming the problem.
int dry_run(const DryRunInputs& in);

// The tokens/s per GPU that sambay's own H200 measurements (docs/performance.md) predict for a
// model preset at micro-batch B x L: the measured MFU of the same preset at the nearest shape,
// applied to this run's FLOPs per token and peak. Nothing when the preset was not measured.
struct SpeedEstimate {
  double tokens_per_s_per_gpu = 0;
  double mfu = 0;
  std::string basis;  // which measurement
};
std::optional<SpeedEstimate> expected_speed(const std::string& preset, int64_t B, int64_t L,
                                            double flops_per_token, double peak_tflops);

}  // namespace sambay
