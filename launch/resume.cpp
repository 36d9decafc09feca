#include "launch/resume.h"

#include "core/check.h"
#include "core/config_file.h"
#include "io/checkpoint_dir.h"

#include <fmt/format.h>

#include <map>
#include <set>

namespace sambay {

namespace {

// A saved train config's options as key -> value (repeated keys, like data, joined with ", ").
std::map<std::string, std::string> option_map(const std::string& text, const std::string& source) {
  std::map<std::string, std::string> out;
  for (const ConfigEntry& e : parse_config_text(text, source).entries) {
    std::string& v = out[e.key];
    v += (v.empty() ? "" : ", ") + e.value;
  }
  return out;
}

void print_resume_report(const std::string& message) {
  fmt::print("resume: {}\n", message);
  std::fflush(stdout);
}

}  // namespace

std::optional<CheckpointInfo> find_resume_checkpoint(
    const TrainConfig& cfg, const std::string& checkpoints_dir,
    const std::function<CheckpointInfo(const std::string& step_dir)>& load,
    const std::function<bool(bool loaded_here)>& all_loaded, bool report) {
  const auto print_report = [report](const std::string& message) {
    if (report) print_resume_report(message);
  };
  if (cfg.resume == "none") {
    const std::vector<StepDir> existing = list_checkpoints(checkpoints_dir);
    if (!existing.empty())
      fail("option --resume none: {} already holds checkpoints (newest {}); continue them with "
           "--resume auto or train into another --out_dir",
           checkpoints_dir, existing.front().path);
    return std::nullopt;
  }
  if (cfg.resume == "auto") {
    std::optional<CheckpointInfo> c =
        load_newest_checkpoint_with(checkpoints_dir, load, print_report, all_loaded);
    if (!c) print_report(fmt::format("no checkpoint in {}; starting at step 0", checkpoints_dir));
    return c;
  }
  const CheckpointLocation at = locate_checkpoint(cfg.resume);
  if (!at.step_dir.empty()) return load(at.step_dir);
  std::optional<CheckpointInfo> c =
      load_newest_checkpoint_with(at.checkpoints_dir, load, print_report, all_loaded);
  if (!c) fail("option --resume {}: no checkpoint in {}", cfg.resume, at.checkpoints_dir);
  return c;
}

std::vector<std::string> resume_differences(const CheckpointInfo& info, const TrainConfig& cfg,
                                            int threads) {
  // Options that cannot change the numbers (recompute gives bit-identical gradients).
  static const std::set<std::string> ignored = {
      "out_dir",      "device",       "threads",    "log_every",        "tensorboard",
      "eval_every",   "eval_batches", "save_every", "keep_checkpoints", "resume",
      "recompute",    "watchdog",     "watchdog_s", "on_log_error",     "async_save",
      "peak_tflops"};
  const auto before = option_map(info.train_config_text, "the checkpoint's train config"),
             now = option_map(train_config_to_text(cfg), "this run's train config");
  // A model field newer than the checkpoint is absent from its text; read back, it took the
  // field's default (io/checkpoint.h parse_model_config_text), so that is its old value.
  std::map<std::string, std::string> model_defaults;
  for (const auto& [key, value] : model_config_fields(ModelConfig{}))
    model_defaults["model." + key] = value;
  std::vector<std::string> out;
  if (before.empty()) return out;  // an imported checkpoint: no run to compare with
  for (const auto& [key, value] : now) {
    if (ignored.count(key)) continue;
    auto it = before.find(key);
    auto fallback = model_defaults.find(key);
    const std::string old = it != before.end()        ? it->second
                            : fallback != model_defaults.end() ? fallback->second
                                                               : "(not set)";
    if (old != value) out.push_back(fmt::format("{}: {} -> {}", key, old, value));
  }
  if (info.state.threads != 0 && info.state.threads != threads)
    out.push_back(fmt::format("threads: {} -> {} (CPU sums are split by thread)",
                              info.state.threads, threads));
  return out;
}

}  // namespace sambay
