#include "launch/trainer.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "core/model.h"
#include "io/sampler.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/mup.h"
#include "optim/schedule.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
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
  void write(const std::string& json_line) {
    file << json_line << '\n';
    file.flush();
  }
};

}  // namespace

int run_training(const TrainConfig& cfg) {
  const Clock::time_point t_start = Clock::now();
  if (cfg.threads > 0) omp_set_num_threads(cfg.threads);

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
  metrics.file.open(fs::path(cfg.out_dir) / "metrics.jsonl", std::ios::app);
  if (!metrics.file) fail("{}: cannot open metrics.jsonl for writing", cfg.out_dir);

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

  std::vector<MicroBatch> micro(cfg.grad_accum);
  double first_valid = NAN, last_valid = NAN;
  if (cfg.eval_every > 0) {
    first_valid = last_valid = validation_loss();
    fmt::print("step {:>6} | valid loss {:.4f}\n", 0, first_valid);
    metrics.write(fmt::format(R"({{"step":0,"valid_loss":{}}})", first_valid));
  }
  const Clock::time_point t_train = Clock::now();
  double step_seconds_avg = 0;
  for (int64_t step = 0; step < cfg.steps; ++step) {
    const Clock::time_point t0 = Clock::now();
    // The whole step's samples first: the loss is a mean over its valid targets, so every
    // micro-batch's gradient is scaled by 1 / (valid targets of the step).
    int64_t valid = 0;
    for (int64_t k = 0; k < cfg.grad_accum; ++k) {
      fill(sampler, Split::train, (step * cfg.grad_accum + k) * B, B, L, micro[k]);
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
    // The schedule is evaluated at the update's 1-based number: the first update gets
    // lr / warmup (not zero) and the last one exactly min_lr_ratio * lr.
    const double lr = cfg.lr * lr_multiplier(sched, step + 1);
    for (const ParamGroup& pg : groups) {
      AdamWHyper h{lr * pg.lr_mult, cfg.beta1, cfg.beta2, cfg.adam_eps,
                   cfg.weight_decay * pg.wd_mult};
      adamw_update(model.params.data() + pg.offset, model.grads.data() + pg.offset,
                   adam_m.data() + pg.offset, adam_v.data() + pg.offset, pg.numel, h, step + 1);
    }
    const double dt = seconds_since(t0);
    step_seconds_avg = step == 0 ? dt : 0.9 * step_seconds_avg + 0.1 * dt;
    const bool last = step + 1 == cfg.steps;

    if ((step + 1) % cfg.log_every == 0 || last || step == 0) {
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
  }
  const double train_s = seconds_since(t_train);
  fmt::print("done: {} steps, {} tokens in {} ({:.0f} tok/s); valid loss {:.4f} -> {:.4f}; "
             "total wall time {}\n",
             cfg.steps, cfg.steps * tokens_per_step, format_duration(train_s),
             cfg.steps * tokens_per_step / train_s, first_valid, last_valid,
             format_duration(seconds_since(t_start)));
  return 0;
}

}  // namespace sambay
