#include "launch/trainer.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "core/model.h"
#include "core/utc_time.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/durable_fs.h"
#include "io/json.h"
#include "io/sampler.h"
#include "io/tokenizer_note.h"
#include "launch/checkpoint_writer.h"
#include "launch/dry_run.h"
#include "launch/memory_plan.h"
#include "launch/preemption.h"
#include "launch/resume.h"
#include "launch/run_dir.h"
#include "launch/run_log.h"
#include "launch/run_metrics.h"
#include "launch/throughput.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/mup.h"
#include "optim/schedule.h"
#include "parallel/context_parallel.h"
#include "parallel/data_parallel.h"
#include "parallel/process_grid.h"
#include "parallel/watchdog.h"
#include "sambay_version.h"
#if SAMBAY_HAVE_CUDA
#include "launch/gpu_engine.h"
#endif

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <vector>

namespace sambay {

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    const size_t end = text.find('\n');
    lines.push_back(text.substr(0, end));
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
  return lines;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_duration(double s) {
  if (!std::isfinite(s)) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

// This rank's part of one micro-batch: tokens, targets, document ids, each [B, L / cp] (under
// context parallelism its two chunks of every sample, parallel/context_parallel.h).
struct MicroBatch {
  std::vector<int32_t> tokens, targets, doc;
  int64_t valid = 0;  // targets >= 0
};

void fill(const Sampler& sampler, Split split, int64_t first, int64_t B, int64_t L,
          const GridShape& shape, const GridCoords& coords, MicroBatch& mb) {
  std::vector<int32_t> tokens(B * L), targets(B * L), doc(B * L);
  fill_samples(sampler, split, first, B, tokens.data(), targets.data(), doc.data());
  if (shape.cp == 1) {
    mb.tokens = std::move(tokens), mb.targets = std::move(targets), mb.doc = std::move(doc);
  } else {
    const int64_t local = B * L / shape.cp;
    mb.tokens.resize(local), mb.targets.resize(local), mb.doc.resize(local);
    take_context_chunks(tokens.data(), mb.tokens.data(), B, L, coords.cp, shape.cp);
    take_context_chunks(targets.data(), mb.targets.data(), B, L, coords.cp, shape.cp);
    take_context_chunks(doc.data(), mb.doc.data(), B, L, coords.cp, shape.cp);
  }
  mb.valid = 0;
  for (int32_t t : mb.targets) mb.valid += t >= 0;
}

const char* signal_name(int sig) {
  return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

// Why the ranks stop early, agreed between them (the largest code wins): a signal number
// (SIGUSR1, SIGTERM), or a log that cannot be written (above every signal number).
constexpr int kStopForLogFailure = 1000;

// What a checkpoint after `step` records besides the tensors.
TrainState train_state(const TrainConfig& cfg, int64_t step, int64_t consumed_samples, double lr,
                       int threads) {
  TrainState st;
  st.step = step;
  st.consumed_samples = consumed_samples;
  st.consumed_tokens = consumed_samples * cfg.seq_len;
  for (const std::string& d : cfg.data) st.data_sources += (st.data_sources.empty() ? "" : ";") + d;
  st.data_seed = cfg.data_seed;
  st.seq_len = cfg.seq_len;
  st.global_batch = cfg.micro_batch * cfg.grad_accum;
  st.valid_fraction = cfg.valid_fraction;
  st.schedule = cfg.schedule;
  st.peak_lr = cfg.lr;
  st.last_lr = lr;
  st.min_lr_ratio = cfg.min_lr_ratio;
  st.decay_fraction = cfg.decay_fraction;
  st.warmup = cfg.warmup;
  st.total_steps = cfg.steps;
  st.init_seed = cfg.seed;
  st.threads = threads;
  return st;
}

}  // namespace

int run_training(const TrainConfig& cfg) {
  const Clock::time_point t_start = Clock::now();
  // Ranks (parallel/process_grid.h): data-parallel ranks split each step's global batch and
  // shard the optimizer state; rank 0 alone prints and writes files.
  const ProcessGrid grid = make_process_grid(cfg.tp, cfg.cp);
  // Gradients and the sharded optimizer state span the data- and context-parallel ranks of one
  // TP rank (they hold the same parameter shard); a step's loss is summed over them too.
  const Communicator dp_cp = make_communicator(grid.dp_cp, CommBackend::mpi, "dp_cp");
  const Communicator tp = make_communicator(grid.tp, CommBackend::mpi, "tp");
  const Communicator cp = make_communicator(grid.cp, CommBackend::mpi, "cp");
  const Communicator world = make_communicator(grid.world, CommBackend::mpi, "world");
  const bool lead = grid.world_rank == 0;
  check_train_sizes(cfg, grid.shape.dp);
  // From here on a rank that stops making progress ends the job (parallel/watchdog.h).
  std::optional<Watchdog> watchdog;
  if (cfg.watchdog)
    watchdog.emplace(WatchdogLimits{cfg.watchdog_s}, grid.world_rank, grid.world_size);
  auto watch = [&](WatchPhase phase, int64_t step) {
    if (watchdog) watchdog->enter(phase, step);
  };
  auto watched = [&](WatchPhase phase, double seconds) {
    if (watchdog) watchdog->done(phase, seconds);
  };
  omp_set_num_threads(cfg.threads > 0 ? cfg.threads
                                      : std::max(1, omp_get_max_threads() / grid.local_size));
  const int threads = omp_get_max_threads();
  const std::string placement = describe_placement(grid);  // collective: every rank calls it
  RunLog log(lead, parse_log_error_policy(cfg.on_log_error));
  RunMetrics metrics(log);  // metrics.jsonl records (and TensorBoard events) through the log

  // Device: auto takes the GPU when this build has CUDA and the machine a GPU; asking for cuda
  // where either is missing is an error, never a silent CPU run.
  const bool use_gpu = cfg.device == "cuda" || (cfg.device == "auto" && cuda_device_count() > 0);
  if (use_gpu) {
    // A dry run plans a GPU run on any machine (for an H200 when none is visible).
    if (!cfg.dry_run && !built_with_cuda())
      fail("option --device cuda: this sambay was built without CUDA (SAMBAY_CUDA=OFF or no "
           "nvcc at configure time)");
    if (!cfg.dry_run && cuda_device_count() == 0)
      fail("option --device cuda: no CUDA device is visible");
    if (cfg.cp > 1)
      fail("option --cp {}: context parallelism runs on the CPU backend only for now "
           "(--device cpu)", cfg.cp);
    if (cuda_device_count() > 0) cuda_set_device(grid.gpu);
  }
  const bool gpu_visible = use_gpu && cuda_device_count() > 0;
  const std::string device_line =
      !use_gpu ? "cpu"
               : gpu_visible ? "cuda: " + cuda_device_description()
                             : "cuda (none visible here: planned for an NVIDIA H200, 139.8 GiB)";

  // The run directory (launch/run_dir.h): one trainer at a time, writable, and nothing written
  // into it (but the lock) until the run is accepted below.
  namespace fs = std::filesystem;
  const std::string checkpoints_dir = (fs::path(cfg.out_dir) / "checkpoints").string();
  std::optional<RunDirLock> run_lock;
  if (lead && !cfg.dry_run) {
    run_lock.emplace(cfg.out_dir);
    check_writable_directory(checkpoints_dir, "the checkpoints directory");
    if (cfg.tensorboard)
      check_writable_directory((fs::path(cfg.out_dir) / "tensorboard").string(),
                               "the TensorBoard directory (--tensorboard)");
  }
  barrier(world);  // the other ranks read checkpoints only under the lock

  // Data, made by the tokenizer the model expects; token ids are checked against the vocabulary
  // (io/sampler.h).
  check_data_tokenizer(cfg.data, cfg.model);
  SamplerConfig sc;
  for (const std::string& entry : cfg.data) sc.sources.push_back(parse_data_source(entry));
  sc.seq_len = cfg.seq_len;
  sc.seed = cfg.data_seed;
  sc.valid_fraction = cfg.valid_fraction;
  sc.vocab = cfg.model.vocab;
  const Sampler sampler = open_sampler(sc);
  if (cfg.dry_run) {
    // 139.8 GiB: an H200 as CUDA reports it.
    const double h200_bytes = 139.8 * double(int64_t(1) << 30);
    return dry_run({cfg, grid, sampler, use_gpu, device_line,
                    use_gpu ? std::optional<double>(gpu_visible ? double(cuda_memory_total())
                                                                : h200_bytes)
                            : std::nullopt,
                    !gpu_visible && use_gpu, checkpoints_dir});
  }

  // GPU tensors move over NCCL when each rank of a node has a GPU of its own, and through host
  // memory with MPI when ranks share GPUs.
  std::optional<Communicator> tp_gpu, grads_gpu;
  std::string gpu_collectives;
  if (use_gpu && grid.world_size > 1) {
    const CommBackend b = grid.local_size <= cuda_device_count() ? CommBackend::nccl
                                                                 : CommBackend::mpi_host_staged;
    tp_gpu.emplace(make_communicator(grid.tp, b, "tp"));
    grads_gpu.emplace(make_communicator(grid.dp_cp, b, "dp_cp"));
    gpu_collectives = fmt::format(", GPU tensors over {}", backend_name(b));
  }
  // Model (this rank's TP shard) and optimizer state. The GPU keeps no host copy of either.
  const ModelConfig& mc = cfg.model;
  ModelSplit split;
  split.tp = tp_gpu ? &*tp_gpu : &tp;
  split.sequence_parallel = cfg.sequence_parallel, split.cp = &cp;
  Model<float> model = make_model_shard<float>(mc, cfg.seed, split, /*host_state=*/!use_gpu);
  const ParamLayout full_layout = build_param_layout(mc);
  const MupConfig mup = mup_config_for(mc);
  const int64_t bucket = std::max<int64_t>(1, int64_t(cfg.dp_bucket_mb * 1048576 / 4));
  // The CPU backend's optimizer state (the GPU engine keeps its own on the device).
  std::optional<ShardedAdamW> opt;
  if (!use_gpu)
    opt = make_sharded_adamw(dp_cp, model.layout.total, param_groups(model.layout, mup), bucket);
  const int64_t B = cfg.micro_batch, L = cfg.seq_len, Lc = L / grid.shape.cp;
  const int64_t global_batch = B * cfg.grad_accum * grid.shape.dp;

  // The activations live where the model runs.
  Activations<float> acts;
  const RecomputeMode recompute_mode = parse_recompute_mode(cfg.recompute, "recompute");
  RecomputeChoice recompute;  // where the activations live, what they recompute and why
#if SAMBAY_HAVE_CUDA
  std::optional<GpuEngine> gpu;
  if (use_gpu) {
    gpu.emplace(make_gpu_engine(model, param_groups(model.layout, mup), B, Lc, recompute_mode,
                                cfg.doc_masking, grads_gpu ? &*grads_gpu : nullptr,
                                tp_gpu ? &*tp_gpu : nullptr, bucket));
    recompute = gpu->recompute;
  }
#else
  struct NoGpu {};
  std::optional<NoGpu> gpu;
#endif
  // What this rank owns of the optimizer state (its ZeRO pieces): the values it stores in a
  // checkpoint and loads back.
  RankOwnership owned;
#if SAMBAY_HAVE_CUDA
  if (gpu) owned = ownership_of(gpu->shards, tp.size, tp.rank);
#endif
  if (opt) owned = ownership_of(opt->layout, tp.size, tp.rank);

  // Resume: parameters, AdamW moments and the step; the data position is consumed_samples.
  // Each rank reads its TP shard of the weights and the moments it owns, a tensor at a time
  // (the GPU through one tensor's staging buffer), so a checkpoint resumes under any layout.
  const std::string config_text = train_config_to_text(cfg);
  int64_t start_step = 0, consumed_samples = 0;
  std::string resumed_from;  // the checkpoint directory, when resuming
  // The run's id (io/checkpoint.h) is kept across resumes; a fresh start (or a checkpoint
  // written before run ids) gets a new one, the same on every rank.
  std::string run_id;
  {
    std::vector<float> staging;  // the GPU's: one tensor of the shard
    std::vector<float> m_load, v_load;
    RankLoadTargets targets;
    targets.tp = tp.size, targets.tp_rank = tp.rank;
    targets.moments = owned;
    if (opt) {
      targets.params_at = [&](int i) { return model.params.data() + model.layout.params[i].offset; };
      targets.adam_m = opt->m, targets.adam_v = opt->v;
    } else {
      targets.params_at = [&](int i) {
        staging.resize(model.layout.params[i].numel);
        return staging.data();
      };
#if SAMBAY_HAVE_CUDA
      targets.params_loaded = [&](int i) {
        const ParamSpec& p = model.layout.params[i];
        gpu_set_params(*gpu, p.offset, staging.data(), p.numel);
      };
#endif
      m_load.resize(owned.buffer_size), v_load.resize(owned.buffer_size);
      targets.adam_m = m_load, targets.adam_v = v_load;
    }
    const auto load = [&](const std::string& dir) {
      return load_checkpoint_part(dir, cfg.model, targets);
    };
    const auto all_loaded = [&](bool here) {
      return all_reduce_scalar(world, here ? 0.0 : 1.0, ReduceOp::max) == 0;
    };
    if (std::optional<CheckpointInfo> c =
            find_resume_checkpoint(cfg, checkpoints_dir, load, all_loaded, lead)) {
      start_step = c->state.step;
      consumed_samples = c->state.consumed_samples;
      resumed_from = c->dir;
      run_id = c->run_id;
      if (lead) {
        log.print("resume: from {} (step {}, {} samples consumed)", c->dir, start_step,
                  consumed_samples);
        for (const std::string& d : resume_differences(*c, cfg, threads))
          log.print("resume: note: changed since the checkpoint, so later steps differ from an "
                    "uninterrupted run: {}",
                    d);
      }
    }
#if SAMBAY_HAVE_CUDA
    if (gpu) {
      if (start_step > 0) {
        gpu_set_moments(*gpu, m_load.data(), v_load.data());
      } else {  // a fresh start: the initial weights, a tensor at a time
        ParamLayout init_layout = full_layout;
        apply_init_rules(init_layout, mc);
        for (size_t i = 0; i < model.layout.params.size(); ++i) {
          const ParamSpec& p = model.layout.params[i];
          staging.resize(p.numel);
          init_shard_tensor(init_layout.params[i], p, staging.data(), cfg.seed, tp.size, tp.rank);
          gpu_set_params(*gpu, p.offset, staging.data(), p.numel);
        }
      }
      gpu_params_ready(*gpu);
    }
#endif
  }
  {
    std::array<int32_t, 9> id{};  // 32 hex digits and a terminating zero
    const std::string mine = run_id.empty() ? new_run_id() : run_id;
    std::memcpy(id.data(), mine.data(), std::min(mine.size(), sizeof id - 1));
    broadcast(world, id.data(), int64_t(id.size()), DType::i32, 0);
    run_id = reinterpret_cast<const char*>(id.data());
  }
  if (!gpu) {
    recompute = resolve_recompute(recompute_mode, mc, B, Lc, std::nullopt,
                                  [&](const RecomputePlan& plan) {
                                    return activation_bytes(model.config, B, Lc, plan, 4);
                                  });
    recompute.log = fmt::format("recompute {}: the CPU backend\n{}",
                                recompute_mode_name(recompute_mode), recompute.log);
    acts = plan_activations(model, B, Lc, recompute.plan);
  }
  // One micro-batch through the model where it lives (backward too when grad_scale > 0).
  // last_of_step: the GPU hands the gradient buckets to the data-parallel group during it.
  auto run_micro_batch = [&](const MicroBatch& mb, float grad_scale,
                             [[maybe_unused]] bool last_of_step) {
    const int32_t* doc = cfg.doc_masking ? mb.doc.data() : nullptr;
#if SAMBAY_HAVE_CUDA
    if (gpu)
      return gpu_forward_backward(*gpu, mb.tokens.data(), mb.targets.data(), mb.doc.data(),
                                  grad_scale > 0, grad_scale, last_of_step);
#endif
    ForwardResult r = model_forward(model, acts, mb.tokens.data(), mb.targets.data(), doc);
    if (grad_scale > 0)
      model_backward(model, acts, mb.tokens.data(), mb.targets.data(), doc, grad_scale);
    return r;
  };

  ScheduleConfig sched{parse_lr_schedule(cfg.schedule), cfg.warmup, cfg.steps, cfg.min_lr_ratio,
                       cfg.decay_fraction};
  const int64_t tokens_per_step = global_batch * L;
  // FLOPs per token in sambay's exact count (the MFU basis) and in ArchScale's estimate_flops,
  // logged side by side so that either side's numbers can be compared (core/model.h).
  const double flops_per_token = training_flops_per_token(mc, L);
  const double archscale_flops_per_token = archscale_estimated_flops_per_token(mc, L);
  double acts_bytes = double(acts.arena.capacity);
#if SAMBAY_HAVE_CUDA
  if (gpu) acts_bytes = double(gpu->acts.arena.capacity);
#endif
  // Memory per rank, as planned (launch/memory_plan.h); the step lines print what is in use.
  const RankMemoryPlan memory_plan = plan_rank_memory(
      {mc, grid.shape.tp, dp_cp.size, bucket, gpu.has_value(), cfg.async_save, acts_bytes});
  double mem_mib = memory_plan.host_bytes() / 1048576.0;
  const double acts_mib = acts_bytes / 1048576.0;
#if SAMBAY_HAVE_CUDA
  if (gpu) mem_mib = cuda_memory_used() / 1048576.0;  // the whole GPU allocation
#endif
  // MFU per GPU against the GPU's own peak (launch/throughput.h); none on the CPU.
  std::optional<double> peak_tflops = parse_peak_tflops(cfg.peak_tflops);
  std::string peak_source = "--peak_tflops";
  if (!gpu) peak_tflops.reset();
  if (gpu && !peak_tflops) {
    peak_tflops = peak_bf16_tflops(device_line);
    peak_source = peak_tflops ? "the device table" : "";
  }

  // The run is accepted: its config, metrics and checkpoints go into the run directory from
  // here on, and what interrupted runs left there is removed.
  if (lead) {
    run_lock->accept();
    write_file_durably((fs::path(cfg.out_dir) / "config.ini").string(), config_text);
    for (const std::string& removed : remove_run_leftovers(cfg.out_dir))
      log.print("cleanup: removed {} (left by an interrupted run)", removed);
    metrics.open(cfg.out_dir, cfg.tensorboard);
    // The record that marks where this process starts: step records after it come from this
    // process (a restart from step 0 after a kill before the first checkpoint repeats steps,
    // which the marker makes visible). It holds what runs, where, and from which build.
    Json start = metrics_record(resumed_from.empty() ? "run_start" : "resume", start_step);
    if (!resumed_from.empty()) {
      start["resumed_from_step"] = start_step;
      start["checkpoint"] = resumed_from;
    }
    start["time"] = utc_now();
    start["run_id"] = run_id;
    start["world_size"] = grid.world_size;
    start["sambay_version"] = SAMBAY_VERSION;
    start["git_commit"] = SAMBAY_GIT_COMMIT;
    if (const char* job = std::getenv("SLURM_JOB_ID")) start["slurm_job_id"] = job;
    Json hosts = Json::array();
    for (std::string_view line : split_lines(placement)) hosts.push_back(std::string(line));
    start["placement"] = {{"world_size", grid.world_size}, {"dp", grid.shape.dp},
                          {"tp", grid.shape.tp},           {"cp", grid.shape.cp},
                          {"device", device_line},         {"ranks", describe(grid) + gpu_collectives},
                          {"threads_per_rank", threads},   {"hosts", hosts}};
    start["model"] = {{"name", mc.name}, {"parameters", full_layout.total}};
    start["config"] = train_config_json(cfg);
    start["memory_mib"] = mem_mib;
    metrics.write(start);
    log.print("sambay train: model {} ({:.2f}M parameters, {} layers, d {}), device {}", mc.name,
              full_layout.total / 1e6, mc.n_layers(), mc.d_model, device_line);
    log.print("  ranks: {}{}", describe(grid), gpu_collectives);
    for (std::string_view line : split_lines(placement)) log.print("  {}", line);
    log.print("  resolved config (saved as {}/config.ini):", cfg.out_dir);
    for (std::string_view line : split_lines(config_text)) log.print("    {}", line);
    log.print("  data {} train / {} valid samples of {} tokens; {} tokens per step "
              "({} ranks x {} x {} x {})",
              samples_available(sampler, Split::train), samples_available(sampler, Split::valid),
              L, tokens_per_step, grid.shape.dp, cfg.grad_accum, B, L);
    log.print("  {} steps, lr {:.2e} {} (warmup {}), memory {:.1f} MiB "
              "(activations {:.1f} MiB), {} threads, run dir {}, run id {}",
              cfg.steps, cfg.lr, cfg.schedule, cfg.warmup, mem_mib, acts_mib,
              omp_get_max_threads(), cfg.out_dir, run_id);
    log.print("  memory per rank (planned; this rank owns {:.2f} GiB of checkpoint state):",
              memory_plan.owned_bytes / double(1 << 30));
    for (const std::string& line : describe_memory_plan(memory_plan)) log.print("    {}", line);
    if (gpu)
      log.print("  MFU per GPU against {}", peak_tflops
                                                ? fmt::format("{:.1f} TFLOP/s (dense bf16, from {})",
                                                              *peak_tflops, peak_source)
                                                : fmt::format("nothing: {} is not in the peak table; "
                                                              "give --peak_tflops",
                                                              device_line));
    for (std::string_view line : split_lines(recompute.log)) log.print("  {}", line);
    if (recompute_mode != RecomputeMode::auto_choice)  // auto's log names what it chose
      log.print("  {}", describe_recompute(mc, recompute.plan, gpu.has_value()));
    log.print("  muP++ {}; {} head, init {} (x{}); residual scale {:.4g}, logit scale {:.4g}, "
              "attention scale {:.4g}",
              mup.enabled ? fmt::format("base width {}, depth {}, head dim {}", mup.base_width,
                                        mup.base_depth ? fmt::format("{}", mup.base_depth)
                                                       : std::string("off"),
                                        mup.base_head_dim ? fmt::format("{}", mup.base_head_dim)
                                                          : std::string("off"))
                          : std::string("off (standard parameterisation)"),
              mc.tied_embedding ? "tied" : "untied", init_rule_name(mc.init), mc.init_multiplier,
              model.residual_scale, model.logit_scale, model.attention_scale);
    log.print("  FLOPs per token: {:.4g} exact (sambay's count, the MFU basis), {:.4g} ArchScale "
              "estimate_flops, {:.4g} 6N (non-embedding)",
              flops_per_token, archscale_flops_per_token, six_n_flops_per_token(mc));
    log.print("  parameter groups (peak lr and AdamW weight decay):");
    ParamLayout initialised = full_layout;
    apply_init_rules(initialised, mc);
    for (const std::string& line : describe_param_groups(initialised, mup, cfg.lr, cfg.weight_decay))
      log.print("    {}", line);
    log.flush();
  }

  auto validation_loss = [&]() {
    double sum = 0;
    int64_t count = 0;
    MicroBatch mb;
    for (int64_t i = grid.coords.dp; i < cfg.eval_batches; i += grid.shape.dp) {
      fill(sampler, Split::valid, i * B, B, L, grid.shape, grid.coords, mb);
      ForwardResult r = run_micro_batch(mb, 0.0f, false);
      sum += r.loss_sum;
      count += r.valid_rows;
    }
    sum = all_reduce_scalar(dp_cp, sum);
    count = int64_t(all_reduce_scalar(dp_cp, double(count)));
    return count > 0 ? sum / count : NAN;
  };
  auto validate = [&](int64_t step) {
    watch(WatchPhase::validation, step);
    const Clock::time_point t0 = Clock::now();
    const double loss = validation_loss();
    watched(WatchPhase::validation, seconds_since(t0));
    log.print("step {:>6} | valid loss {:.4f}", step, loss);
    Json record = metrics_record("valid", step);
    record["valid_loss"] = loss;
    metrics.write(record);
    return loss;
  };

  // Checkpoints: every rank stores what it owns (launch/checkpoint_writer.h); rank 0 writes
  // the index from every rank's pieces, so it alone computes them all.
  std::optional<CheckpointWriter> writer;
  {
    std::vector<int32_t> coords(2 * grid.world_size);
    const int32_t mine[2] = {tp.rank, dp_cp.rank};
    all_gather(world, mine, coords.data(), 2, DType::i32);
    std::vector<std::vector<StoredPiece>> pieces(grid.world_size);
    for (int r = 0; r < grid.world_size; ++r) {
      if (!lead && r != grid.world_rank) continue;
      const int tp_rank = coords[2 * r], zero_rank = coords[2 * r + 1];
      const ShardLayout zero =
          gpu && !grads_gpu ? make_shard_layout(model.layout.total, model.layout.total, 1, 0)
                            : make_shard_layout(model.layout.total, bucket, dp_cp.size, zero_rank);
      // Another TP rank's shard has the same layout, cut at its own offsets.
      pieces[r] = owned_pieces(full_layout, model.layout, ownership_of(zero, tp.size, tp_rank));
    }
    CheckpointMeta meta{mc, config_text, {}, run_id,
                        {grid.shape.dp, grid.shape.tp, grid.shape.cp}};
    writer.emplace(world, checkpoints_dir, cfg.keep_checkpoints, std::move(meta),
                   std::move(pieces), owned.buffer_size, /*pinned=*/gpu.has_value());
  }
  int64_t last_saved = start_step > 0 ? start_step : -1;
  auto report_commit = [&](const CheckpointCommit& c) {
    if (!lead) return;
    log.print("checkpoint: step {} -> {} ({:.1f} MB{} in {:.2f} s, {:.2f} GB/s)", c.step, c.dir,
              c.bytes / 1e6, c.async ? ", written in the background" : "", c.write_s,
              c.bytes / 1e9 / std::max(c.write_s, 1e-9));
    for (const std::string& removed : c.removed) log.print("checkpoint: removed {}", removed);
    log.flush();
    Json record = metrics_record("checkpoint", c.step);
    record["dir"] = c.dir;
    record["seconds"] = c.write_s;
    record["bytes"] = c.bytes;
    record["async"] = c.async;
    record["commit_s"] = c.total_s;
    metrics.write(record);
  };
  // async: in the background (periodic saves); otherwise complete when it returns.
  auto save = [&](int64_t step, double lr, bool async) {
    watch(WatchPhase::checkpoint, step);
    const Clock::time_point t_save = Clock::now();
    const TrainState st = train_state(cfg, step, consumed_samples, lr, threads);
    const auto fill = [&](float* p, float* m, float* v) {
#if SAMBAY_HAVE_CUDA
      if (gpu) {
        gpu_copy_owned_state(*gpu, p, m, v);
        return;
      }
#endif
      for (const OwnedRange& r : owned.ranges)
        std::copy(model.params.begin() + r.begin, model.params.begin() + r.end, p + r.pos);
      if (m) std::copy(opt->m.begin(), opt->m.end(), m);
      if (v) std::copy(opt->v.begin(), opt->v.end(), v);
    };
    const std::vector<CheckpointCommit> done =
        opt ? writer->save(st, async, fill, opt->m, opt->v) : writer->save(st, async, fill);
    last_saved = step;
    for (const CheckpointCommit& c : done) report_commit(c);
    const double stall = seconds_since(t_save);
    if (async)
      log.print("checkpoint: step {}: training paused {:.3f} s for the snapshot; writing in the "
                "background",
                step, stall);
    watched(WatchPhase::checkpoint, stall);
  };
  // Completes a background save still being written (before the run ends or stops).
  auto complete_saves = [&] {
    watch(WatchPhase::checkpoint, last_saved);
    const Clock::time_point t0 = Clock::now();
    if (std::optional<CheckpointCommit> c = writer->finish()) report_commit(*c);
    barrier(world);  // no rank exits before the checkpoint is complete
    watched(WatchPhase::checkpoint, seconds_since(t0));
  };

  // The last record of this process: why it ended, and what it trained.
  Clock::time_point t_train = Clock::now();  // set again when the first step starts
  bool ended = false;
  auto end_record = [&](const std::string& reason, int64_t step, double train_s) {
    Json end = metrics_record("end", step);
    end["reason"] = reason;
    end["steps_trained"] = step - start_step;
    end["tokens_trained"] = (step - start_step) * tokens_per_step;
    end["train_s"] = train_s;
    end["elapsed_s"] = seconds_since(t_start);
    metrics.write(end);
    ended = true;
  };

  // Why to stop early, the same on every rank (a signal, or a log that cannot be written).
  auto stop_code = [&] {
    const int mine = std::max(preemption_signal(), log.failure().empty() ? 0 : kStopForLogFailure);
    return int(all_reduce_scalar(world, double(mine), ReduceOp::max));
  };
  // Stops for `code` after `step` (the checkpoint of `step` written, when there is one to
  // write); returns the exit code.
  auto stop = [&](int code, int64_t step, double lr) {
    const bool trained = step > start_step;
    const double train_s = trained ? seconds_since(t_train) : 0;
    if (code == kStopForLogFailure) {
      if (lead)
        std::fputs(fmt::format("sambay: error: {}: stopping after step {}{} (--on_log_error "
                               "continue would train on without the log)\n",
                               log.failure(), step, trained ? " with a checkpoint" : "")
                       .c_str(),
                   stderr);
      if (trained && last_saved != step) save(step, lr, false);
      complete_saves();
      if (!ended) end_record("log write failed: " + log.failure(), step, train_s);
      return 2;
    }
    if (trained) {
      log.print("{} received: stopping after step {}", signal_name(code), step);
      if (last_saved != step) save(step, lr, false);
    } else {
      log.print("{} received during startup: stopping before training (nothing new to "
                "checkpoint)",
                signal_name(code));
    }
    complete_saves();
    log.print("exiting with code {} (requeue; continue with --resume auto)", kExitRequeue);
    log.flush();
    end_record(fmt::format("signal {}", signal_name(code)), step, train_s);
    return kExitRequeue;
  };

  if (start_step >= cfg.steps) {
    log.print("done: the checkpoint is at step {}, --steps is {}; nothing to train", start_step,
              cfg.steps);
    log.flush();
    end_record("nothing to train", start_step, 0);
    return 0;
  }
  // A signal that came during startup (the handlers are installed first thing, launch/main.cpp)
  // is acted on now that the run can stop cleanly.
  if (const int code = stop_code()) return stop(code, start_step, 0);
  std::vector<MicroBatch> micro(cfg.grad_accum);
  double first_valid = NAN, last_valid = NAN, lr = 0;
  if (cfg.eval_every > 0 && start_step == 0) first_valid = last_valid = validate(0);
  t_train = Clock::now();
  double step_seconds_avg = 0;
  for (int64_t step = start_step; step < cfg.steps; ++step) {
    watch(WatchPhase::step, step + 1);
    const Clock::time_point t0 = Clock::now();
    // The whole step's samples first: the loss is a mean over the valid targets of the global
    // batch (all ranks), so every micro-batch's gradient is scaled by 1 / (that count).
    const SampleRange slice =
        data_parallel_slice(step, global_batch, grid.coords.dp, grid.shape.dp);
    int64_t valid = 0;
    for (int64_t k = 0; k < cfg.grad_accum; ++k) {
      fill(sampler, Split::train, consumed_samples + slice.first - step * global_batch + k * B, B,
           L, grid.shape, grid.coords, micro[k]);
      valid += micro[k].valid;
    }
    valid = int64_t(all_reduce_scalar(dp_cp, double(valid)));
    SAMBAY_CHECK(valid > 0, "step {}: no valid targets in the batch", step);
#if SAMBAY_HAVE_CUDA
    if (gpu) gpu_zero_grads(*gpu);
#endif
    if (!gpu) std::fill(model.grads.begin(), model.grads.end(), 0.0f);
    double loss_sum = 0;
    for (int64_t k = 0; k < cfg.grad_accum; ++k)
      loss_sum += run_micro_batch(micro[k], 1.0f / valid, k + 1 == cfg.grad_accum).loss_sum;
    const double loss = all_reduce_scalar(dp_cp, loss_sum) / valid;
    double norm = 0;
#if SAMBAY_HAVE_CUDA
    if (gpu) {
      gpu_reduce_gradients(*gpu);
      norm = gpu_grad_norm(*gpu);
    }
#endif
    if (!gpu) {
      reduce_tensor_parallel_grads(model);
      reduce_gradients(*opt, model.grads.data());
      norm = sharded_grad_norm(*opt, &tp);
    }
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      Json record = metrics_record("step", step + 1);
      record["loss"] = loss, record["grad_norm"] = norm;  // NaN and inf are written as null
      metrics.write(record);
      end_record(std::isfinite(loss) ? "non-finite gradient norm" : "non-finite loss", step,
                 seconds_since(t_train));
      fail("step {}: non-finite {} ({}); stopping before the parameters are damaged", step + 1,
           std::isfinite(loss) ? "gradient norm" : "loss", std::isfinite(loss) ? norm : loss);
    }
    const double coef = clip_coefficient(norm, cfg.clip);
    // The schedule is evaluated at the update's 1-based number: the first update gets
    // lr / warmup (not zero) and the last one exactly min_lr_ratio * lr.
    lr = cfg.lr * lr_multiplier(sched, step + 1);
    const AdamWHyper hyper{lr, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay};
#if SAMBAY_HAVE_CUDA
    if (gpu) gpu_adamw_step(*gpu, coef, hyper, step + 1);
#endif
    if (!gpu) sharded_adamw_step(*opt, model.params.data(), coef, hyper, step + 1);
    consumed_samples += global_batch;
    const double dt = seconds_since(t0);
    watched(WatchPhase::step, dt);
    step_seconds_avg = step == start_step ? dt : 0.9 * step_seconds_avg + 0.1 * dt;
    const bool last = step + 1 == cfg.steps;

    if ((step + 1) % cfg.log_every == 0 || last || step == start_step) {
      const double tok_s = tokens_per_step / dt;
      const double eta = step_seconds_avg * (cfg.steps - step - 1);
      // Per GPU (per rank on the CPU): MFU against one GPU's peak, or achieved GFLOP/s; sambay's
      // exact count first, ArchScale's estimate_flops after the slash.
      const Throughput exact = throughput(tok_s, flops_per_token, grid.world_size, peak_tflops);
      const Throughput est =
          throughput(tok_s, archscale_flops_per_token, grid.world_size, peak_tflops);
      const char* unit = gpu ? "GPU" : "rank";
      const std::string rate =
          exact.mfu ? fmt::format("MFU {:.1f}% exact / {:.1f}% ArchScale-est per GPU",
                                  100 * *exact.mfu, 100 * *est.mfu)
                    : fmt::format("{:.1f} / {:.1f} GFLOP/s exact / ArchScale-est per {}",
                                  exact.flops_per_s_per_gpu / 1e9, est.flops_per_s_per_gpu / 1e9,
                                  unit);
      log.print("step {:>6}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s ({:.0f} per "
                "{}) | {} | {:.0f} ms | mem {:.0f} MiB | ETA {}",
                step + 1, cfg.steps, loss, lr, norm, tok_s, exact.tokens_per_s_per_gpu, unit, rate,
                dt * 1e3, mem_mib, format_duration(eta));
      log.flush();
      Json record = metrics_record("step", step + 1);
      record["loss"] = loss;
      record["lr"] = lr;
      record["grad_norm"] = norm;
      record["tokens"] = (step + 1) * tokens_per_step;
      record["tokens_per_s"] = tok_s;
      record["step_ms"] = dt * 1e3;
      record["elapsed_s"] = seconds_since(t_start);
      record["flops_per_s"] = flops_per_token * tok_s;
      // Compute so far, in both conventions (the sweep collector and the scaling fits read them).
      const double tokens = double((step + 1) * tokens_per_step);
      record["flops_exact"] = flops_per_token * tokens;
      record["flops_archscale_estimate"] = archscale_flops_per_token * tokens;
      record["tokens_per_s_per_gpu"] = exact.tokens_per_s_per_gpu;
      record["flops_per_s_per_gpu"] = exact.flops_per_s_per_gpu;
      if (exact.mfu) record["mfu"] = *exact.mfu;
      record["memory_mib"] = mem_mib;
      metrics.write(record);
    }
    if (cfg.eval_every > 0 && ((step + 1) % cfg.eval_every == 0 || last))
      last_valid = validate(step + 1);
    if (cfg.save_every > 0 && (step + 1) % cfg.save_every == 0)
      save(step + 1, lr, cfg.async_save && !last);
    else if (std::optional<CheckpointCommit> c = writer->poll())
      report_commit(*c);
    // Slurm signals every rank, but not at the same instant: the ranks agree (max over the
    // signal numbers) so that all stop after the same step.
    if (const int code = stop_code()) return stop(code, step + 1, lr);
  }
  // Training time excludes the final checkpoint, which is reported on its own line.
  const double train_s = seconds_since(t_train);
  if (last_saved != cfg.steps) save(cfg.steps, lr, false);
  complete_saves();
  const int64_t trained = cfg.steps - start_step;
  const std::string valid_text =
      cfg.eval_every > 0 ? fmt::format("; valid loss {:.4f} -> {:.4f}", first_valid, last_valid)
                         : "";
  log.print("done: {} steps, {} tokens in {} ({:.0f} tok/s){}; total wall time {}", trained,
            trained * tokens_per_step, format_duration(train_s),
            trained * tokens_per_step / train_s, valid_text,
            format_duration(seconds_since(t_start)));
  {
    // What the ranks really held at their peak, against the plan (collective).
    const double mine = peak_resident_bytes();
    std::vector<double> peaks(grid.world_size);
    all_gather(world, &mine, peaks.data(), 1, DType::f64);
    const auto most = std::max_element(peaks.begin(), peaks.end());
    log.print("host memory: peak RSS per rank {:.0f} MiB at most (rank {}), {:.0f} MiB at least; "
              "planned {:.0f} MiB beside the process's own",
              *most / 1048576.0, most - peaks.begin(),
              *std::min_element(peaks.begin(), peaks.end()) / 1048576.0,
              memory_plan.host_bytes() / 1048576.0);
    Json record = metrics_record("host_memory", cfg.steps);
    record["peak_rss_bytes"] = peaks;
    record["planned_host_bytes"] = memory_plan.host_bytes();
    record["owned_state_bytes"] = memory_plan.owned_bytes;
    metrics.write(record);
  }
  log.flush();
  end_record("done", cfg.steps, train_s);
  // Training is complete and checkpointed, but a log that failed on the way is incomplete.
  if (const int code = stop_code(); code == kStopForLogFailure) return stop(code, cfg.steps, lr);
  return 0;
}

}  // namespace sambay
