#include "launch/ckpt_commands.h"

#include "launch/command_line.h"

#include "core/check.h"
#include "core/model.h"
#include "core/param_layout.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/hf_interop.h"
#include "io/phonebook.h"
#include "io/tokenizer_note.h"

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstring>
#include <iostream>

namespace sambay {

namespace po = boost::program_options;

namespace {

constexpr const char* kUsage = R"(usage: sambay ckpt <command> [options]

commands:
  inspect PATH                              what a checkpoint holds, every checksum verified
  export --format hf PATH OUTDIR            safetensors (sharded above 5 GB), config.json,
                                            generation_config.json and the tokenizer files
                                            (Phi-4-mini-flash layout: transformers, vLLM)
  import --format hf DIR --out CKPT         a Hugging Face directory as a step-0 checkpoint in CKPT
  bench                                     checkpoint write/read speed (sambay ckpt bench --help)
  phonebook PATH                            the phonebook retrieval accuracy of a checkpoint's model

PATH is a step directory, a checkpoints directory (its newest checkpoint) or a run directory.
)";

// The step directory PATH names: itself, or the newest checkpoint of a checkpoints directory.
std::string step_dir_of(const std::string& path) {
  const CheckpointLocation at = locate_checkpoint(path);
  if (!at.step_dir.empty()) return at.step_dir;
  const std::vector<StepDir> dirs = list_checkpoints(at.checkpoints_dir);
  if (dirs.empty()) fail("{}: no checkpoints", at.checkpoints_dir);
  return dirs.front().path;
}

void need_hf(const std::string& format) {
  if (format != "hf") fail("option --format: '{}' is not supported (only 'hf')", format);
}

int cmd_inspect(int argc, const char* const* argv) {
  std::string path;
  po::options_description o("sambay ckpt inspect");
  o.add_options()("path", po::value(&path)->required(), "checkpoint (positional)");
  po::positional_options_description pos;
  pos.add("path", 1);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, o, pos, vm, "usage: sambay ckpt inspect PATH")) return 0;
  const CheckpointInfo info = read_checkpoint_info(step_dir_of(path));
  const std::vector<std::vector<ShardReader::PieceCheck>> checks = verify_checkpoint_data(info);
  const TrainState& s = info.state;
  fmt::print("checkpoint {}\n", info.dir);
  fmt::print("  written by sambay {} (git {}) at {}\n", info.sambay_version, info.git_commit,
             info.created);
  fmt::print("  format version {}, {}\n", info.format_version,
             info.run_id.empty() ? "no run id (written before run ids; its files are not bound "
                                   "to each other by checksums)"
                                 : "run " + info.run_id);
  fmt::print("  step {}: {} samples, {} tokens consumed\n", info.step, s.consumed_samples,
             s.consumed_tokens);
  fmt::print("  data: {} (seed {}, seq_len {}, global batch {}, valid fraction {})\n",
             s.data_sources, s.data_seed, s.seq_len, s.global_batch, s.valid_fraction);
  fmt::print("  schedule: {} peak lr {} (last {}), warmup {}, total {} steps, min ratio {}, "
             "decay fraction {}\n",
             s.schedule, s.peak_lr, s.last_lr, s.warmup, s.total_steps, s.min_lr_ratio,
             s.decay_fraction);
  fmt::print("  init seed {}, {} threads\n", s.init_seed, s.threads);
  fmt::print("  parallel layout: dp {} x tp {} x cp {} ({} rank files)\n", info.parallel.dp,
             info.parallel.tp, info.parallel.cp, info.parallel.world_size());
  fmt::print("  model ({:.3f}M parameters):\n", build_param_layout(info.model).total / 1e6);
  for (const auto& [key, value] : model_config_fields(info.model))
    fmt::print("    {} = {}\n", key, value);
  fmt::print("  train config:\n");
  for (size_t a = 0, b; a < info.train_config_text.size(); a = b + 1) {
    b = info.train_config_text.find('\n', a);
    if (b == std::string::npos) b = info.train_config_text.size();
    fmt::print("    {}\n", info.train_config_text.substr(a, b - a));
  }
  int64_t elements = 0;
  for (const GlobalTensor& t : info.tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    elements += n;
  }
  fmt::print("  tensors: {} ({} elements)\n", info.tensors.size(), elements);
  std::vector<std::string> non_finite;
  for (size_t i = 0; i < info.tensors.size(); ++i) {
    const GlobalTensor& t = info.tensors[i];
    std::string pieces;
    int64_t bad = 0;
    for (size_t p = 0; p < t.pieces.size(); ++p) {
      pieces += fmt::format("{}{} {:08x}", p ? ", " : "", t.pieces[p].file, checks[i][p].crc32c);
      bad += checks[i][p].non_finite;
    }
    fmt::print("    {:<48} {:<4} [{}]  crc32c {}{}\n", t.path, stored_dtype_name(t.dtype),
               fmt::join(t.shape, ", "), pieces,
               bad ? fmt::format("  NON-FINITE: {} values", bad) : "");
    if (bad) non_finite.push_back(fmt::format("{} ({} values)", t.path, bad));
  }
  if (!non_finite.empty())
    fail("{}: {} tensors hold NaN or infinite values, so training cannot continue from this "
         "checkpoint: {}",
         info.dir, non_finite.size(), fmt::join(non_finite, ", "));
  fmt::print("verified: every checksum, shape and placement matches; every value is finite\n");
  return 0;
}

// The tokenizer files an export ships: --tokenizer FILE, none, or (auto) the one the
// checkpoint's training data notes, when that was a BPE.
std::shared_ptr<const BpeTokenizer> export_tokenizer(const std::string& choice,
                                                     const CheckpointInfo& info) {
  if (choice == "none") return nullptr;
  std::vector<std::string> data;
  for (size_t a = 0, b; a < info.state.data_sources.size(); a = b + 1) {
    b = info.state.data_sources.find(';', a);
    if (b == std::string::npos) b = info.state.data_sources.size();
    if (b > a) data.push_back(info.state.data_sources.substr(a, b - a));
  }
  const std::optional<TokenizerNote> note = check_data_tokenizer(data, info.model);
  if (choice != "auto") {
    if (note && note->tokenizer != "byte") return load_noted_tokenizer(*note, choice);
    return BpeTokenizer::load(choice);
  }
  if (!note) {
    fmt::print("note: no tokenizer files: the training data ({}) has no .tokenizer.json beside "
               "it; --tokenizer FILE adds them\n",
               info.state.data_sources);
    return nullptr;
  }
  if (note->tokenizer == "byte") {
    fmt::print("note: no tokenizer files: the model was trained on byte-level data\n");
    return nullptr;
  }
  return load_noted_tokenizer(*note);
}

int cmd_export(int argc, const char* const* argv) {
  std::string format, path, out, dtype, tokenizer;
  HfExportOptions options;
  double shard_gb = options.max_shard_bytes / 1e9;
  po::options_description o("sambay ckpt export");
  o.add_options()("format", po::value(&format)->required(), "output format: hf")
      ("dtype", po::value(&dtype)->default_value("f32"), "f32 (exact) or bf16 (as released)")
      ("force", flag(&options.force), "export a model the release's code cannot run")
      ("max_shard_gb", value_with_default(&shard_gb), "safetensors files up to this size; larger models are sharded with model.safetensors.index.json")
      ("tokenizer", po::value(&tokenizer)->default_value("auto"), "tokenizer files: auto (the BPE the training data's .tokenizer.json names), none, or a .tiktoken FILE")
      ("path", po::value(&path)->required(), "checkpoint (positional)")
      ("out", po::value(&out)->required(), "output directory (positional)");
  po::positional_options_description pos;
  pos.add("path", 1).add("out", 1);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, o, pos, vm, "usage: sambay ckpt export --format hf PATH OUTDIR")) return 0;
  need_hf(format);
  if (dtype != "f32" && dtype != "bf16") fail("option --dtype: '{}' is not f32 or bf16", dtype);
  if (!(shard_gb > 0)) fail("option --max_shard_gb: must be positive, got {}", shard_gb);
  options.bf16 = dtype == "bf16";
  options.max_shard_bytes = static_cast<int64_t>(shard_gb * 1e9);
  const LoadedCheckpoint c = load_checkpoint(step_dir_of(path), std::nullopt);
  options.tokenizer = export_tokenizer(tokenizer, c.info);
  const HfExportReport r = export_hf(c.info.model, c.params, out, options);
  for (const std::string& w : r.warnings)
    fmt::print("warning: vLLM's Phi4Flash cannot load this export (Hugging Face's code can): {}\n", w);
  fmt::print("{} (step {}) -> {}/: {} ({})\n", c.info.dir, c.info.step, out,
             fmt::join(r.files, ", "), dtype);
  return 0;
}

int cmd_import(int argc, const char* const* argv) {
  std::string format, dir, out;
  int keep = 3;
  po::options_description o("sambay ckpt import");
  o.add_options()("format", po::value(&format)->required(), "input format: hf")
      ("dir", po::value(&dir)->required(), "directory with config.json and safetensors (positional)")
      ("out", po::value(&out)->required(), "checkpoints directory to write step_00000000 into")
      ("keep_checkpoints", po::value(&keep)->default_value(keep), "checkpoints kept in --out");
  po::positional_options_description pos;
  pos.add("dir", 1);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, o, pos, vm, "usage: sambay ckpt import --format hf DIR --out CKPT"))
    return 0;
  need_hf(format);
  const HfImport hf = import_hf(dir);
  const std::vector<float> zeros(hf.params.size(), 0.0f);
  const TrainState state;  // step 0: fresh moments, nothing consumed
  const std::string note = "# imported from " + dir + "\n";
  const SaveResult r =
      save_checkpoint(out, {hf.model, note, state, hf.params, zeros, zeros}, keep);
  fmt::print("{} -> {} ({:.3f}M parameters, AdamW moments zero, step 0); train from it with "
             "sambay train --resume {}\n",
             dir, r.dir, hf.params.size() / 1e6, r.dir);
  return 0;
}

}  // namespace

// Greedy exact-match accuracy on the synthetic phonebook task (io/phonebook.h), on the CPU.
int cmd_phonebook(int argc, const char* const* argv) {
  std::string path;
  int64_t queries = 0, entries = 0;
  uint64_t seed = 0;
  po::options_description o("sambay ckpt phonebook");
  o.add_options()("path", po::value(&path)->required(), "checkpoint (positional)")(
      "queries", po::value(&queries)->default_value(50), "phonebooks to ask")(
      "entries", po::value(&entries)->default_value(20), "entries per phonebook")(
      "seed", po::value(&seed)->default_value(12345),
      "phonebook stream (differs from the training data's by default)");
  po::positional_options_description pos;
  pos.add("path", 1);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, o, pos, vm, "usage: sambay ckpt phonebook PATH [options]")) return 0;
  if (queries <= 0) fail("option --queries: must be positive, got {}", queries);
  if (entries <= 0 || entries > phonebook_max_entries())
    fail("option --entries: must be in [1, {}], got {}", phonebook_max_entries(), entries);
  LoadedCheckpoint ck = load_checkpoint(step_dir_of(path), std::nullopt);
  Model<float> model = make_model<float>(ck.info.model, 0);
  if (model.config.vocab < 257)
    fail("{}: model.vocab is {}; the phonebook task uses the byte tokenizer's 257 tokens",
         ck.info.dir, model.config.vocab);
  model.params = std::move(ck.params);
  // Longest prompt plus its answer: every entry line is at most 40 bytes.
  const int64_t max_len = 40 * (entries + 2);
  Activations<float> acts = plan_activations(model, 1, max_len, false);
  const double accuracy = phonebook_accuracy(
      [&](const std::vector<int32_t>& context) {
        if (static_cast<int64_t>(context.size()) > max_len)
          fail("phonebook prompt of {} tokens exceeds the planned {}", context.size(), max_len);
        return greedy_next_token(model, acts, context.data(),
                                 static_cast<int64_t>(context.size()));
      },
      queries, entries, seed);
  fmt::print("phonebook: {} queries of {} entries, exact-match accuracy {:.1f}% ({})\n", queries,
             entries, 100 * accuracy, ck.info.dir);
  return 0;
}

int cmd_ckpt(int argc, const char* const* argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  if (sub == "inspect") return cmd_inspect(argc - 1, argv + 1);
  if (sub == "export") return cmd_export(argc - 1, argv + 1);
  if (sub == "import") return cmd_import(argc - 1, argv + 1);
  if (sub == "bench") return cmd_ckpt_bench(argc - 1, argv + 1);
  if (sub == "phonebook") return cmd_phonebook(argc - 1, argv + 1);
  fail("unknown command 'ckpt {}' (valid: inspect, export, import, bench, phonebook)", sub);
}

}  // namespace sambay
