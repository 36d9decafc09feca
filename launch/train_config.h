// Everything `sambay train` is told: read from an INI config file (Boost.Program_options
// syntax, sections become prefixes: [model] d_model = 128 is model.d_model) and overridden by
// command-line flags of the same names. The resolved config is printed and saved beside the
// run's outputs.
#pragma once

#include "core/model_config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

struct TrainConfig {
  // Model: a preset plus per-field overrides (model.<field>).
  std::string model_preset = "demo-sambay-da";
  ModelConfig model;

  // Data: "path" or "path:weight" entries (Megatron .bin/.idx prefix or .tok file).
  std::vector<std::string> data;
  double valid_fraction = 0.01;
  uint64_t data_seed = 1234;

  // Batch: global batch = micro_batch * grad_accum * data-parallel ranks sequences of seq_len.
  int64_t seq_len = 256;
  int64_t micro_batch = 4;
  int64_t grad_accum = 1;
  int64_t steps = 1000;

  // Optimizer.
  double lr = 1e-3;
  double min_lr_ratio = 0.1;
  std::string schedule = "cosine";  // constant, cosine, linear, wsd
  int64_t warmup = 100;
  double decay_fraction = 0.2;  // wsd: the last fraction of steps decays
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  double clip = 1.0;  // global gradient-norm clip; 0 disables

  // Run.
  uint64_t seed = 42;  // parameter initialisation
  std::string out_dir = "runs/default";
  std::string device = "auto";  // auto (GPU when present), cpu, cuda
  // Activation recompute (core/recompute_plan.h): none, auto (the least recompute that fits the
  // GPU's memory; none on the CPU) or all. The old booleans true/false are read as all/none;
  // parse_train_config stores one of the three names.
  std::string recompute = "auto";
  bool doc_masking = true;  // reset scan/conv state and mask attention at document boundaries
  int64_t log_every = 10;
  bool tensorboard = false;  // also write TensorBoard event files in out_dir/tensorboard
  int64_t eval_every = 100;
  int64_t eval_batches = 8;
  int threads = 0;  // CPU threads; 0 = all cores (shared among the ranks of a node)
  // Ending a hung job (parallel/watchdog.h): on unless turned off; a step's limit in seconds
  // (0: automatic, ten times the slowest step so far, at least a minute).
  bool watchdog = true;
  double watchdog_s = 0;
  std::string on_log_error = "stop";  // a failed log or metrics write: stop or continue

  // Parallelism: data-parallel ranks = world size / (tp * cp) (docs/parallelism.md).
  int tp = 1;  // tensor-parallel ranks
  bool sequence_parallel = false;  // with tp > 1: norms and residual stream split by rows too
  int cp = 1;  // context-parallel ranks: each holds seq_len / cp positions of every sample
  double dp_bucket_mb = 32;  // MiB of fp32 gradients per reduce-scatter bucket

  // Checkpoints (out_dir/checkpoints, io/checkpoint.h).
  int64_t save_every = 0;    // steps between checkpoints; 0: only at the end and on a signal
  int keep_checkpoints = 3;  // newest complete checkpoints kept (>= 1)
  // Periodic checkpoints are written by a background thread while training goes on
  // (launch/checkpoint_writer.h); the final one and those on SIGUSR1/SIGTERM are synchronous.
  bool async_save = true;
  // One GPU's dense bf16 peak in TFLOP/s for MFU: "auto" (from the device's name) or a number.
  std::string peak_tflops = "auto";
  // Plan the run (config, layout, memory per rank, expected speed, files) and exit: not saved
  // in the config text (an action, not a setting).
  bool dry_run = false;
  std::string resume = "auto";  // auto (newest good one, if any), none, or a checkpoint path
};

// Parses argv (after "train") and the --config file it names. `--help` prints the options and
// returns false. Errors name the file (or "command line") and the option.
bool parse_train_config(int argc, const char* const* argv, TrainConfig& out);

// Checks cross-field rules not expressible per option; errors name the option.
void validate_train_config(const TrainConfig& c);

// Checks that the sizes the trainer plans from the options (activations, tokens of the run,
// validation samples, gradient buckets) cannot wrap around 64 bits with `data_parallel` ranks
// (core/size_limits.h); errors name the option. validate_train_config runs it for one rank.
void check_train_sizes(const TrainConfig& c, int data_parallel);

// The resolved config in the same INI syntax (loadable with --config).
std::string train_config_to_text(const TrainConfig& c);

}  // namespace sambay
