#include "launch/trainer.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "core/model.h"
#include "io/checkpoint.h"
#include "io/json.h"
#include "io/sampler.h"
#include "launch/preemption.h"
#include "launch/resume.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/mup.h"
#include "optim/schedule.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <span>

namespace sambay {

namespace {

using Clock = std::chrono::steady_clock;

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

// "path" or "path:weight" (a trailing ":number" is the weight).
DataSourceSpec parse_data_entry(const std::string& entry) {
  const size_t colon = entry.rfind(':');
  if (colon != std::string::npos && colon + 1 < entry.size()) {
    const std::string tail = entry.substr(colon + 1);
    char* end = nullptr;
    const double w = std::strtod(tail.c_str(), &end);
    if (end && *end == '\0') {
      if (!(w > 0)) fail("option --data: weight of '{}' must be positive", entry);
      return {entry.substr(0, colon), w};
    }
  }
  return {entry, 1.0};
}

// The samples of one micro-batch: tokens, targets, document ids, each [B, L].
struct MicroBatch {
  std::vector<int32_t> tokens, targets, doc;
  int64_t valid = 0;  // targets >= 0
};

void fill(const Sampler& sampler, Split split, int64_t first, int64_t B, int64_t L,
          MicroBatch& mb) {
  mb.tokens.resize(B * L), mb.targets.resize(B * L), mb.doc.resize(B * L);
  fill_samples(sampler, split, first, B, mb.tokens.data(), mb.targets.data(), mb.doc.data());
  mb.valid = 0;
  for (int32_t t : mb.targets) mb.valid += t >= 0;
}

// Per-parameter optimizer multipliers from muP++ and the no-decay rule for vectors.
struct ParamGroup {
  int64_t offset, numel;
  double lr_mult, wd_mult;
};

std::vector<ParamGroup> param_groups(const ParamLayout& layout, const MupConfig& mup) {
  std::vector<ParamGroup> groups;
  for (const ParamSpec& p : layout.params)
    groups.push_back({p.offset, p.numel, mup_lr_multiplier(p.cls, mup),
                      mup_weight_decay_multiplier(p.cls, mup)});
  return groups;
}

struct Metrics {
  std::ofstream file;
  void open(const std::filesystem::path& path) {
    // A run killed mid-line leaves a partial last line; start on a fresh one.
    bool partial = false;
    if (std::ifstream old(path, std::ios::binary | std::ios::ate); old && old.tellg() > 0) {
      old.seekg(-1, std::ios::end);
      partial = old.get() != '\n';
    }
    file.open(path, std::ios::app);
    if (!file) fail("{}: cannot open for writing", path.string());
    if (partial) file << '\n';
  }
  void write(const std::string& json_line) {
    file << json_line << '\n';
    file.flush();
  }
};

const char* signal_name(int sig) {
  return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

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
  if (cfg.threads > 0) omp_set_num_threads(cfg.threads);
  const int threads = omp_get_max_threads();
  install_preemption_handlers();

  // Device. The CUDA training path is the CUDA backend issue's; until it exists a GPU run is
  // refused when asked for and reported when found, never silently replaced.
  const bool gpu_present = cuda_device_count() > 0;
  if (cfg.device == "cuda")
    fail("option --device cuda: the CUDA training path is not built into this sambay yet; use "
         "--device cpu");
  std::string device_line = "cpu";
  if (cfg.device == "auto" && gpu_present)
    device_line = "cpu (a GPU is present, but this sambay trains on the CPU only so far)";

  namespace fs = std::filesystem;
  fs::create_directories(cfg.out_dir);
  {
    std::ofstream resolved(fs::path(cfg.out_dir) / "config.ini");
    resolved << train_config_to_text(cfg);
    if (!resolved) fail("{}: cannot write config.ini", cfg.out_dir);
  }
  Metrics metrics;
  metrics.open(fs::path(cfg.out_dir) / "metrics.jsonl");

  // Data.
  SamplerConfig sc;
  for (const std::string& entry : cfg.data) sc.sources.push_back(parse_data_entry(entry));
  sc.seq_len = cfg.seq_len;
  sc.seed = cfg.data_seed;
  sc.valid_fraction = cfg.valid_fraction;
  const Sampler sampler = open_sampler(sc);

  // Model and optimizer state.
  const ModelConfig& mc = cfg.model;
  Model<float> model = make_model<float>(mc, cfg.seed);
  const MupConfig mup = mup_config_for(mc);
  const std::vector<ParamGroup> groups = param_groups(model.layout, mup);
  std::vector<float> adam_m(model.params.size(), 0.0f), adam_v(model.params.size(), 0.0f);
  const int64_t B = cfg.micro_batch, L = cfg.seq_len;
  const int64_t global_batch = B * cfg.grad_accum;

  // Resume: parameters, AdamW moments and the step; the data position is consumed_samples.
  const std::string checkpoints_dir = (fs::path(cfg.out_dir) / "checkpoints").string();
  const std::string config_text = train_config_to_text(cfg);
  int64_t start_step = 0, consumed_samples = 0;
  if (std::optional<CheckpointInfo> c =
          find_resume_checkpoint(cfg, checkpoints_dir, {model.params, adam_m, adam_v})) {
    start_step = c->state.step;
    consumed_samples = c->state.consumed_samples;
    fmt::print("resume: from {} (step {}, {} samples consumed)\n", c->dir, start_step,
               consumed_samples);
    for (const std::string& d : resume_differences(*c, cfg, threads))
      fmt::print("resume: note: changed since the checkpoint, so later steps differ from an "
                 "uninterrupted run: {}\n",
                 d);
    metrics.write(fmt::format(R"({{"resumed_from_step":{},"checkpoint":{}}})", start_step,
                              json_quote(c->dir)));
  }
  Activations<float> acts = plan_activations(model, B, L, cfg.recompute);

  ScheduleConfig sched{parse_lr_schedule(cfg.schedule), cfg.warmup, cfg.steps, cfg.min_lr_ratio,
                       cfg.decay_fraction};
  const int64_t tokens_per_step = B * L * cfg.grad_accum;
  const double flops_per_token = training_flops_per_token(mc, L);
  const double state_bytes = 4.0 * 4 * model.params.size();  // params, grads, m, v (fp32)
  const double mem_mib = (state_bytes + acts.arena.capacity) / 1048576.0;

  fmt::print("sambay train: model {} ({:.2f}M parameters, {} layers, d {}), device {}\n",
             mc.name, model.layout.total / 1e6, mc.n_layers(), mc.d_model, device_line);
  fmt::print("  data {} train / {} valid samples of {} tokens; {} tokens per step ({} x {} x {})\n",
             samples_available(sampler, Split::train), samples_available(sampler, Split::valid),
             L, tokens_per_step, cfg.grad_accum, B, L);
  fmt::print("  {} steps, lr {:.2e} {} (warmup {}), muP++ {}, memory {:.1f} MiB "
             "(activations {:.1f} MiB{}), {} threads, run dir {}\n",
             cfg.steps, cfg.lr, cfg.schedule, cfg.warmup,
             mup.enabled ? fmt::format("base width {}", mup.base_width) : "off", mem_mib,
             acts.arena.capacity / 1048576.0, cfg.recompute ? ", recompute" : "",
             omp_get_max_threads(), cfg.out_dir);

  auto validation_loss = [&]() {
    double sum = 0;
    int64_t count = 0;
    MicroBatch mb;
    for (int64_t i = 0; i < cfg.eval_batches; ++i) {
      fill(sampler, Split::valid, i * B, B, L, mb);
      ForwardResult r = model_forward(model, acts, mb.tokens.data(), mb.targets.data(),
                                      cfg.doc_masking ? mb.doc.data() : nullptr);
      sum += r.loss_sum;
      count += r.valid_rows;
    }
    return count > 0 ? sum / count : NAN;
  };

  int64_t last_saved = start_step > 0 ? start_step : -1;
  auto save = [&](int64_t step, double lr) {
    const TrainState st = train_state(cfg, step, consumed_samples, lr, threads);
    const Clock::time_point t0 = Clock::now();
    const SaveResult r = save_checkpoint(
        checkpoints_dir, {mc, config_text, st, model.params, adam_m, adam_v}, cfg.keep_checkpoints);
    const double s = seconds_since(t0);
    fmt::print("checkpoint: step {} -> {} ({:.1f} MB in {:.2f} s, {:.2f} GB/s)\n", step, r.dir,
               r.bytes / 1e6, s, r.bytes / 1e9 / s);
    for (const std::string& removed : r.removed) fmt::print("checkpoint: removed {}\n", removed);
    std::fflush(stdout);
    metrics.write(fmt::format(R"({{"step":{},"checkpoint":{},"checkpoint_s":{}}})", step,
                              json_quote(r.dir), s));
    last_saved = step;
  };

  if (start_step >= cfg.steps) {
    fmt::print("done: the checkpoint is at step {}, --steps is {}; nothing to train\n", start_step,
               cfg.steps);
    return 0;
  }
  std::vector<MicroBatch> micro(cfg.grad_accum);
  double first_valid = NAN, last_valid = NAN, lr = 0;
  if (cfg.eval_every > 0 && start_step == 0) {
    first_valid = last_valid = validation_loss();
    fmt::print("step {:>6} | valid loss {:.4f}\n", 0, first_valid);
    metrics.write(fmt::format(R"({{"step":0,"valid_loss":{}}})", first_valid));
  }
  const Clock::time_point t_train = Clock::now();
  double step_seconds_avg = 0;
  for (int64_t step = start_step; step < cfg.steps; ++step) {
    const Clock::time_point t0 = Clock::now();
    // The whole step's samples first: the loss is a mean over its valid targets, so every
    // micro-batch's gradient is scaled by 1 / (valid targets of the step).
    int64_t valid = 0;
    for (int64_t k = 0; k < cfg.grad_accum; ++k) {
      fill(sampler, Split::train, consumed_samples + k * B, B, L, micro[k]);
      valid += micro[k].valid;
    }
    SAMBAY_CHECK(valid > 0, "step {}: no valid targets in the batch", step);
    std::fill(model.grads.begin(), model.grads.end(), 0.0f);
    double loss_sum = 0;
    for (MicroBatch& mb : micro) {
      const int32_t* doc = cfg.doc_masking ? mb.doc.data() : nullptr;
      ForwardResult r = model_forward(model, acts, mb.tokens.data(), mb.targets.data(), doc);
      loss_sum += r.loss_sum;
      model_backward(model, acts, mb.tokens.data(), mb.targets.data(), doc, 1.0f / valid);
    }
    const double loss = loss_sum / valid;
    const double norm = global_grad_norm({std::span<const float>(model.grads)});
    if (!std::isfinite(loss) || !std::isfinite(norm))
      fail("step {}: non-finite {} ({}); stopping before the parameters are damaged", step + 1,
           std::isfinite(loss) ? "gradient norm" : "loss", std::isfinite(loss) ? norm : loss);
    const double coef = clip_coefficient(norm, cfg.clip);
    if (coef < 1)
      for (float& g : model.grads) g *= static_cast<float>(coef);
    lr = cfg.lr * lr_multiplier(sched, step);
    for (const ParamGroup& pg : groups) {
      AdamWHyper h{lr * pg.lr_mult, cfg.beta1, cfg.beta2, cfg.adam_eps,
                   cfg.weight_decay * pg.wd_mult};
      adamw_update(model.params.data() + pg.offset, model.grads.data() + pg.offset,
                   adam_m.data() + pg.offset, adam_v.data() + pg.offset, pg.numel, h, step + 1);
    }
    consumed_samples += global_batch;
    const double dt = seconds_since(t0);
    step_seconds_avg = step == start_step ? dt : 0.9 * step_seconds_avg + 0.1 * dt;
    const bool last = step + 1 == cfg.steps;

    if ((step + 1) % cfg.log_every == 0 || last || step == start_step) {
      const double tok_s = tokens_per_step / dt;
      const double eta = step_seconds_avg * (cfg.steps - step - 1);
      fmt::print("step {:>6}/{} | loss {:.4f} | lr {:.2e} | norm {:.3f} | {:.0f} tok/s | "
                 "{:.1f} GFLOP/s | {:.0f} ms | mem {:.0f} MiB | ETA {}\n",
                 step + 1, cfg.steps, loss, lr, norm, tok_s, flops_per_token * tok_s / 1e9,
                 dt * 1e3, mem_mib, format_duration(eta));
      std::fflush(stdout);
      metrics.write(fmt::format(
          R"({{"step":{},"loss":{},"lr":{},"grad_norm":{},"tokens":{},"tokens_per_s":{},"step_ms":{},"elapsed_s":{}}})",
          step + 1, loss, lr, norm, (step + 1) * tokens_per_step, tok_s, dt * 1e3,
          seconds_since(t_start)));
    }
    if (cfg.eval_every > 0 && ((step + 1) % cfg.eval_every == 0 || last)) {
      last_valid = validation_loss();
      fmt::print("step {:>6} | valid loss {:.4f}\n", step + 1, last_valid);
      metrics.write(fmt::format(R"({{"step":{},"valid_loss":{}}})", step + 1, last_valid));
    }
    if (cfg.save_every > 0 && (step + 1) % cfg.save_every == 0) save(step + 1, lr);
    if (const int sig = preemption_signal()) {
      fmt::print("{} received: stopping after step {}\n", signal_name(sig), step + 1);
      if (last_saved != step + 1) save(step + 1, lr);
      fmt::print("exiting with code {} (requeue; continue with --resume auto)\n", kExitRequeue);
      std::fflush(stdout);
      return kExitRequeue;
    }
  }
  if (last_saved != cfg.steps) save(cfg.steps, lr);
  const double train_s = seconds_since(t_train);
  const int64_t trained = cfg.steps - start_step;
  fmt::print("done: {} steps, {} tokens in {} ({:.0f} tok/s); valid loss {:.4f} -> {:.4f}; "
             "total wall time {}\n",
             trained, trained * tokens_per_step, format_duration(train_s),
             trained * tokens_per_step / train_s, first_valid, last_valid,
             format_duration(seconds_since(t_start)));
  return 0;
}

}  // namespace sambay
