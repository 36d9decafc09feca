#include "launch/train_config.h"

#include "core/check.h"
#include "core/config_file.h"
#include "core/param_layout.h"
#include "core/recompute_plan.h"
#include "core/size_limits.h"
#include "launch/command_line.h"
#include "launch/throughput.h"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <map>

namespace sambay {

namespace po = boost::program_options;

namespace {

po::options_description train_options(TrainConfig& c) {
  po::options_description run("Run");
  run.add_options()
      ("help,h", "print the options and exit")
      ("config", po::value<std::string>(), "INI file with any of these options (flags override it)")
      ("out_dir", value_with_default(&c.out_dir), "run directory: config, metrics, checkpoints, logs")
      ("device", value_with_default(&c.device), "auto (the GPU when present), cpu or cuda")
      ("seed", value_with_default(&c.seed), "parameter initialisation seed")
      ("recompute", value_with_default(&c.recompute)->implicit_value("all"), "activation recompute in backward: none, auto (the least that fits the GPU's memory; none on the CPU) or all (alone: all; true/false: all/none)")
      ("threads", value_with_default(&c.threads), "CPU threads (0 = all cores)")
      ("log_every", value_with_default(&c.log_every), "steps between log lines (and metrics records)")
      ("tensorboard", flag(&c.tensorboard), "also write the metrics as TensorBoard event files in out_dir/tensorboard")
      ("eval_every", value_with_default(&c.eval_every), "steps between validation runs (0 = never)")
      ("eval_batches", value_with_default(&c.eval_batches), "micro-batches per validation run")
      ("save_every", value_with_default(&c.save_every), "steps between checkpoints in out_dir/checkpoints (0 = only at the end and on SIGUSR1/SIGTERM)")
      ("keep_checkpoints", value_with_default(&c.keep_checkpoints), "newest complete checkpoints to keep (>= 1)")
      ("async_save", flag(&c.async_save), "write periodic checkpoints in the background while training goes on (the final one and those on SIGUSR1/SIGTERM are written at once)")
      ("peak_tflops", value_with_default(&c.peak_tflops), "one GPU's dense bf16 peak in TFLOP/s, the MFU basis: auto (from the GPU's name: H100 SXM/PCIe/NVL, H200, A100, B200) or a positive number")
      ("dry_run", flag(&c.dry_run), "resolve the config and layout, plan memory per rank and the expected speed, check every file and directory, and exit without training")
      ("resume", value_with_default(&c.resume), "auto (newest good checkpoint in out_dir, if any), none, or a checkpoint directory")
      ("watchdog", flag(&c.watchdog), "end the job (exit 76, requeued from the last checkpoint) when a rank stops making progress")
      ("watchdog_s", value_with_default(&c.watchdog_s), "seconds a training step may take before the watchdog ends the job (0 = 10x the slowest step, at least 60; startup, validation and checkpoints get at least 30 minutes)")
      ("on_log_error", value_with_default(&c.on_log_error), "when metrics.jsonl or the log cannot be written: stop (checkpoint, exit 2) or continue");
  po::options_description data("Data");
  data.add_options()
      ("data", po::value(&c.data), "training data: PATH or PATH:WEIGHT, repeatable (Megatron prefix or .tok file)")
      ("valid_fraction", value_with_default(&c.valid_fraction), "fraction of samples held out for validation")
      ("data_seed", value_with_default(&c.data_seed), "sample order seed")
      ("seq_len", value_with_default(&c.seq_len), "tokens per sequence")
      ("micro_batch", value_with_default(&c.micro_batch), "sequences per micro-batch")
      ("grad_accum", value_with_default(&c.grad_accum), "micro-batches per optimizer step")
      ("doc_masking", flag(&c.doc_masking), "keep packed documents apart (scan/conv reset, attention mask)");
  po::options_description optim("Optimizer");
  optim.add_options()
      ("steps", value_with_default(&c.steps), "optimizer steps")
      ("lr", value_with_default(&c.lr), "peak learning rate")
      ("min_lr_ratio", value_with_default(&c.min_lr_ratio), "final learning rate / peak")
      ("schedule", value_with_default(&c.schedule), "constant, cosine, linear or wsd")
      ("warmup", value_with_default(&c.warmup), "linear warmup steps")
      ("decay_fraction", value_with_default(&c.decay_fraction), "wsd: fraction of steps that decay")
      ("weight_decay", value_with_default(&c.weight_decay), "AdamW decoupled weight decay: every parameter without muP++; hidden matrices only with muP++ (model.mup_base_width > 0)")
      ("beta1", value_with_default(&c.beta1), "AdamW beta1")
      ("beta2", value_with_default(&c.beta2), "AdamW beta2")
      ("adam_eps", value_with_default(&c.adam_eps), "AdamW epsilon")
      ("clip", value_with_default(&c.clip), "global gradient-norm clip (0 = off)");
  po::options_description model(
      "Model: --model NAME picks a preset (sambay info lists them); --model.FIELD VALUE changes\n"
      "one field of it, e.g. --model.d_model 256 --model.window 512. In a config file the same\n"
      "is 'model.d_model = 256', or 'd_model = 256' under a [model] section. The fields, with\n"
      "the values of the default preset");
  model.add_options()("model", value_with_default(&c.model_preset),
                      "preset name; model.FIELD options override its fields");
  for (const auto& [key, value] : model_config_fields(model_preset(c.model_preset)))
    model.add_options()(("model." + key).c_str(), po::value<std::string>()->value_name("VALUE"),
                        fmt::format("({}: {})", c.model_preset, value).c_str());
  po::options_description parallel("Parallelism (data-parallel ranks = world size / (tp * cp))");
  parallel.add_options()
      ("tp", value_with_default(&c.tp), "tensor-parallel ranks (consecutive ranks of one node)")
      ("sequence_parallel", flag(&c.sequence_parallel), "with tp > 1, also split norms and the residual stream by rows")
      ("cp", value_with_default(&c.cp), "context-parallel ranks (each holds seq_len / cp positions of every sample)")
      ("dp_bucket_mb", value_with_default(&c.dp_bucket_mb), "MiB of gradients per data-parallel reduce-scatter bucket");
  po::options_description all("sambay train options");
  all.add(run).add(data).add(optim).add(parallel).add(model);
  return all;
}

// Applies model.<field> values (from the file or the flags) on top of the preset.
void apply_model_overrides(const po::variables_map& vm, TrainConfig& c, const std::string& src) {
  c.model = model_preset(c.model_preset);
  for (const auto& [key, value] : model_config_fields(c.model)) {
    auto it = vm.find("model." + key);
    if (it != vm.end()) set_model_config_field(c.model, key, it->second.as<std::string>(), src);
  }
}

// A config file's entries as options that follow the command line's (which po::store keeps:
// the first stored value of an option wins); an unknown key is refused with its file and line.
po::parsed_options config_file_options(const ConfigFile& file, const po::options_description& options) {
  po::parsed_options parsed(&options);
  for (const ConfigEntry& e : file.entries) {
    if (!options.find_nothrow(e.key, /*approx=*/false) || e.key == "config" || e.key == "help")
      fail("{}:{}: unknown option '{}' (see sambay train --help)", file.source, e.line, e.key);
    po::option o;
    o.string_key = e.key;
    o.value.push_back(e.value);
    o.original_tokens = {e.key, e.value};
    parsed.options.push_back(std::move(o));
  }
  return parsed;
}

}  // namespace

bool parse_train_config(int argc, const char* const* argv, TrainConfig& c) {
  po::options_description options = train_options(c);
  po::variables_map vm;
  std::string source = "command line";
  try {
    // No positional arguments: a stray word is an error, not silently dropped.
    po::store(po::command_line_parser(join_optional_values(argc, argv, options))
                  .options(options)
                  .positional(po::positional_options_description())
                  .run(),
              vm);
    if (vm.count("help")) {
      std::cout << "usage: sambay train [--config FILE] [--option value ...]\n"
                   "A flag (--recompute) stands alone for true or takes true/false.\n\n"
                << options;
      return false;
    }
    if (vm.count("config")) {
      source = vm["config"].as<std::string>();
      po::store(config_file_options(read_config_file(source), options), vm);
      source = "command line or " + source;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    fail("{}: {} (see sambay train --help)", source, e.what());
  }
  apply_model_overrides(vm, c, source);
  validate_train_config(c);
  c.recompute = recompute_mode_name(parse_recompute_mode(c.recompute, "recompute"));
  return true;
}

void validate_train_config(const TrainConfig& c) {
  auto need = [](bool ok, const char* option, const std::string& why) {
    if (!ok) fail("option --{}: {}", option, why);
  };
  need(!c.data.empty(), "data", "no training data given (--data PATH[:WEIGHT])");
  parse_peak_tflops(c.peak_tflops);  // fails naming --peak_tflops
  need(c.seq_len > 0, "seq_len", fmt::format("must be positive, got {}", c.seq_len));
  need(c.micro_batch > 0, "micro_batch", fmt::format("must be positive, got {}", c.micro_batch));
  need(c.grad_accum > 0, "grad_accum", fmt::format("must be positive, got {}", c.grad_accum));
  need(c.steps > 0, "steps", fmt::format("must be positive, got {}", c.steps));
  // AdamW moves every weight by about lr per step: above 1 one step wipes out any model, and
  // an infinite or NaN rate makes every weight non-finite at once.
  need(std::isfinite(c.lr) && c.lr > 0 && c.lr <= 1, "lr",
       fmt::format("must be a finite number in (0, 1], got {}", c.lr));
  need(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1, "min_lr_ratio",
       fmt::format("must be in [0, 1], got {}", c.min_lr_ratio));
  need(c.warmup >= 0 && c.warmup <= c.steps, "warmup",
       fmt::format("must be in [0, steps = {}], got {}", c.steps, c.warmup));
  need(c.decay_fraction > 0 && c.decay_fraction <= 1, "decay_fraction",
       fmt::format("must be in (0, 1], got {}", c.decay_fraction));
  // Decoupled decay scales the weights by 1 - lr * weight_decay each step: at 1 or above it
  // zeroes or flips them.
  need(std::isfinite(c.weight_decay) && c.weight_decay >= 0 && c.lr * c.weight_decay < 1,
       "weight_decay",
       fmt::format("must be a finite number >= 0 with lr * weight_decay < 1, got {} (lr {})",
                   c.weight_decay, c.lr));
  need(c.beta1 >= 0 && c.beta1 < 1, "beta1", fmt::format("must be in [0, 1), got {}", c.beta1));
  need(c.beta2 >= 0 && c.beta2 < 1, "beta2", fmt::format("must be in [0, 1), got {}", c.beta2));
  need(std::isfinite(c.adam_eps) && c.adam_eps > 0, "adam_eps",
       fmt::format("must be a finite positive number, got {}", c.adam_eps));
  need(std::isfinite(c.clip) && c.clip >= 0, "clip",
       fmt::format("must be a finite number >= 0 (0 disables clipping), got {}", c.clip));
  need(c.valid_fraction >= 0 && c.valid_fraction < 1, "valid_fraction",
       fmt::format("must be in [0, 1), got {}", c.valid_fraction));
  need(c.device == "auto" || c.device == "cpu" || c.device == "cuda", "device",
       fmt::format("'{}' is not auto, cpu or cuda", c.device));
  parse_recompute_mode(c.recompute, "recompute");  // throws naming the option
  need(c.log_every > 0, "log_every", fmt::format("must be positive, got {}", c.log_every));
  need(c.eval_every >= 0, "eval_every", fmt::format("must be >= 0, got {}", c.eval_every));
  need(c.eval_batches > 0, "eval_batches", fmt::format("must be positive, got {}", c.eval_batches));
  need(c.threads >= 0, "threads", fmt::format("must be >= 0, got {}", c.threads));
  need(!c.out_dir.empty(), "out_dir", "must not be empty");
  need(std::isfinite(c.dp_bucket_mb) && c.dp_bucket_mb > 0, "dp_bucket_mb",
       fmt::format("must be a finite positive number, got {}", c.dp_bucket_mb));
  need(c.save_every >= 0, "save_every", fmt::format("must be >= 0, got {}", c.save_every));
  need(c.keep_checkpoints >= 1, "keep_checkpoints",
       fmt::format("must be >= 1 (the newest checkpoint is always kept), got {}",
                   c.keep_checkpoints));
  need(!c.resume.empty(), "resume", "must be auto, none or a checkpoint path");
  need(std::isfinite(c.watchdog_s) && c.watchdog_s >= 0, "watchdog_s",
       fmt::format("must be a finite number >= 0 (0 = automatic), got {}", c.watchdog_s));
  need(c.on_log_error == "stop" || c.on_log_error == "continue", "on_log_error",
       fmt::format("'{}' is not stop or continue", c.on_log_error));
  need(c.seq_len <= kMaxModelDimension, "seq_len",
       fmt::format("must be at most {} (positions are 32-bit), got {}", kMaxModelDimension,
                   c.seq_len));
  validate_model_config(c.model, "model '" + c.model_preset + "'");
  // Before any rule below multiplies options: their products must not wrap around.
  check_train_sizes(c, 1);
  need(c.tp >= 1, "tp", fmt::format("must be >= 1, got {}", c.tp));
  need(c.cp >= 1, "cp", fmt::format("must be >= 1, got {}", c.cp));
  if (c.tp > 1) {
    try {
      tensor_parallel_config(c.model, c.tp);
    } catch (const Error& e) {
      need(false, "tp", e.what());
    }
  }
  need(!c.sequence_parallel || c.tp > 1, "sequence_parallel",
       "splits rows between the ranks of a tensor-parallel group: it needs --tp > 1");
  need(!c.sequence_parallel || c.micro_batch * (c.seq_len / c.cp) % c.tp == 0,
       "sequence_parallel",
       fmt::format("needs micro_batch * seq_len / cp = {} rows divisible by tp = {}",
                   c.micro_batch * (c.seq_len / c.cp), c.tp));
  // Each CP rank holds two of 2 cp chunks of every sample (the load-balanced assignment).
  need(c.cp == 1 || c.seq_len % (2 * c.cp) == 0, "cp",
       fmt::format("seq_len = {} is not divisible by 2 cp = {}", c.seq_len, 2 * c.cp));
  need(c.cp == 1 || c.seq_len / (2 * c.cp) >= c.model.d_conv - 1, "cp",
       fmt::format("chunks of {} positions (seq_len / (2 cp)) are shorter than the conv's halo "
                   "of {}",
                   c.seq_len / (2 * c.cp), c.model.d_conv - 1));
}

void check_train_sizes(const TrainConfig& c, int data_parallel) {
  const ModelConfig& m = c.model;
  // Values one token keeps per layer in the largest planner (every width the CPU and GPU
  // models allocate per token, summed, plus a loss chunk and the scan state): a bound, not the
  // planner's exact figure, so that none of the planner's products can wrap. The field that
  // dominates the sum stands for it in the message.
  const std::pair<const char*, double> widths[] = {
      {"--model.d_model", 8.0 * m.d_model},
      {"--model.d_ff", 3.0 * m.d_ff},
      {"--model.d_inner", 10.0 * m.d_inner + double(m.d_inner) * m.d_state},
      {"--model.dt_rank", double(m.dt_rank)},
      {"--model.d_state", 2.0 * m.d_state},
      {"--model.head_dim", 4.0 * (m.n_heads + m.n_kv_heads) * m.head_dim},
      {"--model.vocab", std::min<double>(m.vocab, 8192)}};
  double per_token = 0, most = -1;
  const char* widest = widths[0].first;
  for (const auto& [option, w] : widths) {
    per_token += w;
    if (w > most) most = w, widest = option;
  }
  check_size_product("one micro-batch's activations",
                     {{"--micro_batch", double(c.micro_batch)},
                      {"--seq_len", double(c.seq_len)},
                      {widest, per_token, "values per token and layer, over all widths"},
                      {"--model.layers", double(m.n_layers() + 2), "layers + 2"}},
                     8);
  check_size_product("the tokens of the whole run",
                     {{"--steps", double(c.steps)},
                      {"--micro_batch", double(c.micro_batch)},
                      {"--grad_accum", double(c.grad_accum)},
                      {"(data-parallel ranks)", double(data_parallel)},
                      {"--seq_len", double(c.seq_len)}});
  check_size_product("a validation run's tokens",
                     {{"--eval_batches", double(c.eval_batches)},
                      {"--micro_batch", double(c.micro_batch)},
                      {"--seq_len", double(c.seq_len)}});
  check_size_product("a gradient bucket", {{"--dp_bucket_mb", c.dp_bucket_mb}}, 1048576);
}

std::string train_config_to_text(const TrainConfig& c) {
  std::string s;
  auto line = [&](const char* k, const auto& v) { s += fmt::format("{} = {}\n", k, v); };
  line("out_dir", c.out_dir);
  line("device", c.device);
  line("seed", c.seed);
  line("recompute", c.recompute);
  line("threads", c.threads);
  line("log_every", c.log_every);
  line("tensorboard", c.tensorboard);
  line("eval_every", c.eval_every);
  line("eval_batches", c.eval_batches);
  line("tp", c.tp);
  line("sequence_parallel", c.sequence_parallel);
  line("cp", c.cp);
  line("dp_bucket_mb", c.dp_bucket_mb);
  line("save_every", c.save_every);
  line("keep_checkpoints", c.keep_checkpoints);
  line("async_save", c.async_save);
  line("peak_tflops", c.peak_tflops);
  line("resume", c.resume);
  line("watchdog", c.watchdog);
  line("watchdog_s", c.watchdog_s);
  line("on_log_error", c.on_log_error);
  for (const std::string& d : c.data) line("data", d);
  line("valid_fraction", c.valid_fraction);
  line("data_seed", c.data_seed);
  line("seq_len", c.seq_len);
  line("micro_batch", c.micro_batch);
  line("grad_accum", c.grad_accum);
  line("doc_masking", c.doc_masking);
  line("steps", c.steps);
  line("lr", c.lr);
  line("min_lr_ratio", c.min_lr_ratio);
  line("schedule", c.schedule);
  line("warmup", c.warmup);
  line("decay_fraction", c.decay_fraction);
  line("weight_decay", c.weight_decay);
  line("beta1", c.beta1);
  line("beta2", c.beta2);
  line("adam_eps", c.adam_eps);
  line("clip", c.clip);
  line("model", c.model_preset);
  s += model_config_to_text(c.model);
  return s;
}

}  // namespace sambay
