#include "launch/dry_run.h"

#include "core/activations.h"
#include "core/check.h"
#include "core/model.h"
#include "core/param_layout.h"
#include "core/recompute_plan.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "launch/memory_plan.h"
#include "launch/run_dir.h"
#include "launch/throughput.h"
#include "parallel/data_parallel.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

namespace sambay {

namespace {

// `sambay_bench step` on one H200, 2 December 2026, --recompute auto (docs/performance.md).
struct MeasuredStep {
  const char* preset;
  int64_t B, L;
  double ms;
};
constexpr MeasuredStep kH200Steps[] = {
    {"transformerpp-1b", 1, 4096, 90.0},  {"transformerpp-1b", 2, 4096, 161.0},
    {"transformerpp-1b", 4, 4096, 303.2}, {"sambay-da-1b", 4, 4096, 331.9},
    {"sambay-da-1b", 1, 8192, 180.1},     {"phi4-mini-flash", 1, 4096, 246.7},
    {"phi4-mini-flash", 1, 8192, 459.0},  {"phi4-mini-flash", 2, 8192, 860.3},
};
constexpr double kH200PeakTflops = 989.4;

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / double(1 << 30)); }

// What --resume would load, verified short of the tensor data.
std::string check_resume(const TrainConfig& cfg, const std::string& checkpoints_dir) {
  auto describe = [&](const std::string& dir) {
    const CheckpointInfo info = read_checkpoint_info(dir);
    const std::vector<std::string> diffs = model_config_differences(info.model, cfg.model);
    if (!diffs.empty()) {
      std::string list;
      for (const std::string& d : diffs) list += "\n  " + d;
      fail("{}: written for a different model ({} fields differ):{}", dir, diffs.size(), list);
    }
    return fmt::format("resume from {} (step {}, format {}, {} rank files, dp {} x tp {} x cp {})",
                       dir, info.step, info.format_version, info.parallel.world_size(),
                       info.parallel.dp, info.parallel.tp, info.parallel.cp);
  };
  if (cfg.resume == "none") {
    const std::vector<StepDir> existing = list_checkpoints(checkpoints_dir);
    if (!existing.empty())
      fail("option --resume none: {} already holds checkpoints (newest {})", checkpoints_dir,
           existing.front().path);
    return "a fresh start (--resume none)";
  }
  std::string dir = checkpoints_dir;
  if (cfg.resume != "auto") {
    const CheckpointLocation at = locate_checkpoint(cfg.resume);
    if (!at.step_dir.empty()) return describe(at.step_dir);
    dir = at.checkpoints_dir;
  }
  const std::vector<StepDir> found = list_checkpoints(dir);
  if (found.empty()) {
    if (cfg.resume != "auto") fail("option --resume {}: no checkpoint in {}", cfg.resume, dir);
    return fmt::format("a fresh start (no checkpoint in {})", dir);
  }
  std::string skipped;
  for (const StepDir& d : found) {
    try {
      return describe(d.path) + skipped;
    } catch (const CheckpointMismatch&) {
      throw;
    } catch (const Error& e) {
      skipped += fmt::format("; {} is damaged and would be skipped: {}", d.path, e.what());
    }
  }
  fail("{}: every checkpoint is damaged{}", dir, skipped);
}

}  // namespace

std::optional<SpeedEstimate> expected_speed(const std::string& preset, int64_t B, int64_t L,
                                            double flops_per_token, double peak_tflops) {
  const MeasuredStep* best = nullptr;
  for (const MeasuredStep& m : kH200Steps) {
    if (preset != m.preset) continue;
    const double distance = std::abs(std::log(double(m.B * m.L) / double(B * L)));
    if (!best || distance < std::abs(std::log(double(best->B * best->L) / double(B * L))))
      best = &m;
  }
  if (!best) return std::nullopt;
  // The measured MFU, in sambay's own FLOP count at the measured sequence length.
  ModelConfig c = model_preset(best->preset);
  const double measured_tok_s = double(best->B * best->L) / (best->ms / 1e3);
  const double mfu =
      training_flops_per_token(c, best->L) * measured_tok_s / (kH200PeakTflops * 1e12);
  SpeedEstimate e;
  e.mfu = mfu;
  e.tokens_per_s_per_gpu = mfu * peak_tflops * 1e12 / flops_per_token;
  e.basis = fmt::format("{} at {} x {}: {:.1f} ms per step, {:.0f} tokens/s, MFU {:.1f}% on one "
                        "H200 (docs/performance.md, 2 Dec 2026)",
                        best->preset, best->B, best->L, best->ms, measured_tok_s, 100 * mfu);
  return e;
}

int dry_run(const DryRunInputs& in) {
  const TrainConfig& cfg = in.cfg;
  const ProcessGrid& grid = in.grid;
  const bool lead = grid.world_rank == 0;
  auto say = [&](const std::string& line) {
    if (lead) fmt::print("{}\n", line);
  };
  const ModelConfig& mc = cfg.model;
  const int tp = grid.shape.tp, zero_ranks = grid.shape.dp * grid.shape.cp;
  const ModelConfig shard = tp > 1 ? tensor_parallel_config(mc, tp) : mc;
  const int64_t B = cfg.micro_batch, L = cfg.seq_len, Lc = L / grid.shape.cp;
  const int64_t bucket = std::max<int64_t>(1, int64_t(cfg.dp_bucket_mb * 1048576 / 4));
  say(fmt::format("sambay train --dry_run: model {} ({:.2f}M parameters, {} layers, d {}), {}",
                  mc.name, parameter_count(mc) / 1e6, mc.n_layers(), mc.d_model, in.device));
  say(fmt::format("  layout: {}", describe(grid)));
  say(fmt::format("  tokens per step: {} ({} data-parallel ranks x {} micro-batches x {} x {})",
                  B * cfg.grad_accum * grid.shape.dp * L, grid.shape.dp, cfg.grad_accum, B, L));

  // Activations with the recompute the run would choose: the GPU's within the memory left next
  // to the model's state, as the engine plans it (core/gpu_activations.h).
  const RecomputeMode mode = parse_recompute_mode(cfg.recompute, "recompute");
  RecomputeChoice choice;
  MemoryPlanInputs plan_in{mc, tp, zero_ranks, bucket, in.gpu, cfg.async_save, 0};
  if (in.gpu) {
    const RankMemoryPlan state_only = plan_rank_memory(plan_in);
    const int64_t total = int64_t(*in.gpu_memory);
    const int64_t budget =
        total - int64_t(state_only.device_bytes()) - gpu_recompute_headroom(total);
    const int64_t nr = cfg.sequence_parallel && tp > 1 ? B * Lc / tp : B * Lc;
    choice = resolve_recompute(mode, shard, B, Lc, budget, [&](const RecomputePlan& plan) {
      return gpu_activation_bytes(shard, B, Lc, plan, tp > 1, nr);
    });
    if (mode == RecomputeMode::auto_choice && !choice.fits)
      fail("recompute auto: the activations of micro-batch {} x {} need {} even with every layer "
           "recomputed, and {} are free for them on a GPU of {}; lower --micro_batch or "
           "--seq_len, or split the model with --tp",
           B, Lc, gib(double(choice.bytes)), gib(double(budget)), gib(double(total)));
  } else {
    choice = resolve_recompute(mode, shard, B, Lc, std::nullopt, [&](const RecomputePlan& plan) {
      return activation_bytes(shard, B, Lc, plan, 4);
    });
  }
  plan_in.activation_bytes = double(choice.bytes);
  const RankMemoryPlan plan = plan_rank_memory(plan_in);
  say(fmt::format("  memory per rank (the largest rank; it owns {} of checkpoint state):",
                  gib(plan.owned_bytes)));
  for (const std::string& line : describe_memory_plan(plan)) say("    " + line);
  if (in.gpu) {
    if (plan.device_bytes() > *in.gpu_memory)
      fail("the plan needs {} per GPU and the GPU has {}: lower --micro_batch or --seq_len, "
           "recompute more (--recompute), or split the model with --tp",
           gib(plan.device_bytes()), gib(*in.gpu_memory));
    say(fmt::format("    of a GPU of {}: {} free after the plan", gib(*in.gpu_memory),
                    gib(*in.gpu_memory - plan.device_bytes())));
    say(fmt::format("    host RSS target: at most 2 GiB + 1.2 x the owned state = {}",
                    gib(2.0 * double(1 << 30) + 1.2 * plan.owned_bytes)));
  }
  // The node's ranks together, against this machine's memory (the node's, when the dry run
  // runs where the job will: a Slurm batch script's first step).
  if (const double node = host_memory_total(); node > 0) {
    const double ranks = plan.host_bytes() * grid.local_size;
    say(fmt::format("    this node: {} rank{} x {} = {} of host memory, of {} here{}", grid.local_size,
                    grid.local_size == 1 ? "" : "s", gib(plan.host_bytes()), gib(ranks), gib(node),
                    in.assumed_device ? " (not checked: the plan is for the GPU machine)" : ""));
    if (ranks > node && !in.assumed_device)
      fail("the plan needs {} of host memory for the {} rank{} on this node and the node has {}: "
           "run fewer ranks per node, or lower --micro_batch or --seq_len",
           gib(ranks), grid.local_size, grid.local_size == 1 ? "" : "s", gib(node));
  }
  std::string_view log = choice.log;
  while (!log.empty()) {
    const size_t end = log.find('\n');
    say(fmt::format("  {}", log.substr(0, end)));
    log.remove_prefix(end == std::string_view::npos ? log.size() : end + 1);
  }
  say(fmt::format("  {}", describe_recompute(shard, choice.plan, in.gpu)));

  // Speed.
  const double flops = training_flops_per_token(mc, L);
  say(fmt::format("  FLOPs per token: {:.4g} exact (sambay's count, the MFU basis), {:.4g} "
                  "ArchScale estimate_flops, {:.4g} 6N (non-embedding)",
                  flops, archscale_estimated_flops_per_token(mc, L), six_n_flops_per_token(mc)));
  if (in.gpu) {
    std::optional<double> peak = parse_peak_tflops(cfg.peak_tflops);
    if (!peak) peak = peak_bf16_tflops(in.device);
    if (!peak) {
      say(fmt::format("  expected speed: unknown ({} is not in the peak table; give "
                      "--peak_tflops)",
                      in.device));
    } else if (const std::optional<SpeedEstimate> e =
                   expected_speed(cfg.model_preset, B, L, flops, *peak)) {
      say(fmt::format("  expected speed: {:.0f} tokens/s per GPU, {:.0f} for the job's {} GPUs "
                      "without communication (MFU {:.1f}% of {:.1f} TFLOP/s); from {}",
                      e->tokens_per_s_per_gpu, e->tokens_per_s_per_gpu * grid.world_size,
                      grid.world_size, 100 * e->mfu, *peak, e->basis));
      say("    (tools/sweep's performance model adds the layout's communication: sambay_sweep "
          "perf, docs/scaling.md)");
    } else {
      say(fmt::format("  expected speed: no single-GPU measurement of preset '{}' (measured: "
                      "transformerpp-1b, sambay-da-1b, phi4-mini-flash)",
                      cfg.model_preset));
    }
  } else {
    say("  expected speed: no measured profile of the CPU backend (speed depends on the "
        "machine's cores)");
  }

  // Files and directories.
  say(fmt::format("  data: {} train / {} valid samples of {} tokens (every source opened and "
                  "checked)",
                  samples_available(in.sampler, Split::train),
                  samples_available(in.sampler, Split::valid), L));
  if (lead) {
    check_writable_directory(in.checkpoints_dir, "the checkpoints directory");
    say(fmt::format("  run directory {}: writable", cfg.out_dir));
    say("  " + check_resume(cfg, in.checkpoints_dir));
  }
  say("dry run: every check passed; nothing was trained or written");
  if (lead) std::fflush(stdout);
  return 0;
}

}  // namespace sambay
