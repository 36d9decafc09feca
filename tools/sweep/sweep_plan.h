// From one sweep spec (INI), the runs of a scaling study or of a μP++ depth sweep: each run's
// complete train.ini, its resources, and the job arrays that submit them (one array per
// resource shape, since the tasks of an array share one resource request).
//
// Spec sections (docs/scaling.md shows complete examples):
//   [sweep]    name, kind = depth | strong | weak, out_dir (relative to the spec file),
//              base_config (optional sambay train config every run starts from),
//              warmup_fraction (optional: warmup = fraction of each run's steps)
//   [train]    sambay train options for every run (they override base_config)
//   [depth]    family: sambay-da, sambay, samba-yoco, transformerpp (the Phi4-flavoured family,
//              depth_family.h) or archscale-<family> (the paper's, core's archscale_model);
//              depths; gpus (per run, data parallel: one value, or one per depth);
//              Phi4-flavoured: width_per_depth, vocab, mup_base_width, mup_base_depth,
//              mup_base_head_dim (the base model the lr was tuned at), tokens_per_param or
//              tokens;
//              archscale: tied (head), and for studies at other scales width_per_depth (its
//              aspect ratio), head_dim, vocab, window; tokens from [budget] (or
//              tokens_per_param / tokens when there is no [budget])
//   [budget]   ArchScale's budget rules (budget.h; rule = archscale, base d0, eta0, b0, t0,
//              n0_mult, hd0, warmup_tokens, weight_decay, beta1, beta2, adam_eps, clip,
//              min_lr_ratio): tokens, batch, lr, warmup, schedule of every run of an archscale
//              family; the [train] keys it derives may not be set
//   [estimate] optional: expected step time and hours per run from the performance model
//              (perf_model.h) with a measured MFU: mfu, peak_flops,
//              optimizer_seconds_per_param, recompute, grad_bytes, param_bytes, and the cluster
//              keys (nvlink_bandwidth, ..., gpu_memory; gpus_per_node from [slurm])
//   [scaling]  gpus (list of run sizes), layouts (e.g. "dp tp2 tp2cp2"; dp is what is left),
//              global_batch (strong: sequences per step over all ranks), steps,
//              tp_option / cp_option (the trainer's option names for the TP and CP degrees)
//   [slurm]    gpus_per_node, cpu (true: ranks are CPU processes, for the local cluster),
//              cpus_per_task, time, partition, account, qos, max_parallel
#pragma once

#include "core/config_file.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sambay::sweep {

struct Layout {
  int64_t tp = 1, cp = 1;
  std::string name() const;  // "dp", "tp2", "tp2cp2"
};
Layout parse_layout(const std::string& s);  // throws naming s

struct PlannedRun {
  std::string name;   // "d8", "g16-tp2"
  std::string group;  // resource shape "n2x8": runs of one job array
  std::string dir;    // absolute run directory
  int64_t depth = 0;  // layers (depth sweeps; 0 otherwise)
  int64_t ranks = 1, nodes = 1, ranks_per_node = 1;
  Layout layout;
  int64_t dp = 1;
  int64_t params = 0;
  int64_t micro_batch = 0, grad_accum = 0, seq_len = 0, steps = 0;
  int64_t tokens = 0;  // steps * global batch tokens
  double lr = 0;       // the peak lr in train.ini (0: not set by the sweep)
  double budget_params = 0;  // ArchScale's N(D) of the budget rule (0: no [budget])
  // [estimate]: predicted seconds per step and memory per GPU (0: no estimate).
  double est_step_seconds = 0, est_memory_bytes = 0, gpu_memory = 0;
  std::vector<std::pair<std::string, std::string>> config;  // train.ini lines, in order
};

struct SlurmOptions {
  int64_t gpus_per_node = 8;
  bool cpu = false;
  int64_t cpus_per_task = 0;  // 0: the cluster's default
  std::string time, partition, account, qos;
  int64_t max_parallel = 0;
};

struct SweepPlan {
  std::string name, kind, out_dir;
  SlurmOptions slurm;
  std::vector<PlannedRun> runs;
  std::vector<std::string> skipped;  // combinations left out, with the reason
};

// `spec_path` anchors relative paths (out_dir, base_config). Nothing is written.
SweepPlan plan_sweep(const ConfigFile& spec, const std::string& spec_path);

// The train.ini text of a run.
std::string config_text(const PlannedRun& run);

// Writes every run's train.ini and sweep.ini (what the collector reads: kind, depth, ranks,
// layout) and one runs.txt per group; refuses to change an existing run's train.ini.
// Returns the runs.txt paths.
std::vector<std::string> write_plan(const SweepPlan& plan);

// The slurm/submit.sh command for a group's job array.
std::vector<std::string> submit_command(const SweepPlan& plan, const std::string& runs_file,
                                        const std::string& submit_script,
                                        const std::string& sambay, bool dry_run);

}  // namespace sambay::sweep
