// The sambay command: train, data tools, and model information.
#include "core/check.h"
#include "core/model.h"
#include "io/data_tools.h"
#include "io/phonebook.h"
#include "sambay_version.h"
#include "launch/ckpt_commands.h"
#include "launch/command_line.h"
#include "launch/preemption.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "parallel/process_grid.h"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cstring>
#include <iostream>
#include <new>

namespace po = boost::program_options;

namespace sambay {
namespace {

constexpr const char* kUsage = R"(usage: sambay <command> [options]

commands:
  train               train a model (sambay train --help)
  data                tokenize a corpus into a Megatron indexed dataset (byte-level or o200k
                      BPE), describe a dataset, make synthetic data (sambay data --help)
  info                list model presets with parameter counts and FLOPs per token
  ckpt                inspect, export (Hugging Face), import checkpoints; I/O bench
                      (sambay ckpt --help)
  --version           the version and git commit of this build

exit codes: 0 done, 2 error, 3 internal error, 75 stopped by SIGUSR1/SIGTERM after writing a
checkpoint (requeue the job; it continues with --resume auto), 76 ended by the watchdog: a rank
stopped making progress (requeue; the job resumes from its last checkpoint)
)";

constexpr const char* kDataUsage = R"(usage: sambay data <command> [options]

commands:
  tokenize --out PREFIX FILE...   a corpus (JSONL or text, gzip or not) as a Megatron indexed
                                  dataset, byte-level or with a tiktoken BPE vocabulary
                                  (o200k_base for phi4-mini-flash); docs/data.md
  stats PATH                      what a dataset (.bin/.idx prefix or .tok file) holds
  phonebook --out PREFIX          the synthetic phonebook retrieval dataset

sambay data <command> --help lists a command's options.
)";

int cmd_train(int argc, const char* const* argv) {
  // First of all: SIGUSR1/SIGTERM from now on are recorded and acted on once the run can stop
  // cleanly (launch/preemption.h), even while MPI and the data are still starting up.
  install_preemption_handlers();
  const MpiSession mpi;  // every rank of an mpirun / srun job runs this
  TrainConfig config;
  if (!parse_train_config(argc, argv, config)) return 0;
  return run_training(config);
}

// Parses a subcommand's flags; `positional` names the option that takes the positional
// arguments (all of them), if any. Prints the help and returns false on --help.
bool parse(int argc, const char* const* argv, po::options_description& options,
           po::variables_map& vm, const char* usage, const char* positional = nullptr) {
  po::positional_options_description pos;
  if (positional) pos.add(positional, -1);
  return parse_command_line(argc, argv, options, pos, vm, usage);
}

// "TEXT=ID" of --special.
SpecialToken parse_special(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  SpecialToken s;
  if (eq != std::string::npos) {
    s.text = spec.substr(0, eq);
    char* end = nullptr;
    const long id = std::strtol(spec.c_str() + eq + 1, &end, 10);
    if (end && *end == '\0' && eq + 1 < spec.size() && id >= 0 && id < (1L << 31)) s.id = int32_t(id);
  }
  if (s.text.empty() || s.id < 0)
    fail("option --special: '{}' is not TEXT=ID (e.g. '<|endoftext|>=199999')", spec);
  return s;
}

int cmd_data_tokenize(int argc, const char* const* argv) {
  std::vector<std::string> inputs, specials;
  std::string out, split, format;
  TokenizeOptions t;
  po::options_description o("sambay data tokenize");
  o.add_options()("out", po::value(&out)->required(), "output prefix (writes PREFIX.bin, PREFIX.idx and PREFIX.tokenizer.json)")
      ("tokenizer", po::value(&t.tokenizer)->default_value(t.tokenizer), "'byte' (257 ids) or a .tiktoken vocabulary (plain or .gz), e.g. o200k_base.tiktoken for phi4-mini-flash")
      ("format", po::value(&format)->default_value("auto"), "input format: jsonl (one JSON object per line), text, or auto (.jsonl/.json[.gz] are jsonl)")
      ("json_key", po::value(&t.json_key)->default_value(t.json_key), "jsonl: the field holding each document's text")
      ("split", po::value(&split)->default_value("paragraphs"), "text: documents are 'files' or 'paragraphs' (runs of non-blank lines)")
      ("threads", po::value(&t.threads)->default_value(t.threads), "encoding threads (0 = one per core)")
      ("allow_special", flag(&t.allow_special), "encode the text of special tokens (<|endoftext|>, ...) as their ids; by default it is ordinary text")
      ("eod", po::value(&t.bpe.eod)->default_value(t.bpe.eod), "the special token appended to every document")
      ("special", po::value(&specials), "TEXT=ID: a special token beyond the vocabulary's known ones (repeatable)")
      ("pattern", po::value(&t.bpe.pattern), "pre-tokenisation regex (PCRE2 syntax); needed for vocabularies other than o200k_base and cl100k_base")
      ("input", po::value(&inputs)->required(), "input files (positional; .gz is read as gzip)");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay data tokenize --out PREFIX [--tokenizer FILE] FILE...", "input"))
    return 0;
  if (split != "files" && split != "paragraphs")
    fail("option --split: '{}' is not 'files' or 'paragraphs'", split);
  t.split = split == "files" ? DocSplit::whole_file : DocSplit::paragraphs;
  if (format == "jsonl")
    t.format = CorpusFormat::jsonl;
  else if (format == "text")
    t.format = CorpusFormat::text;
  else if (format != "auto")
    fail("option --format: '{}' is not jsonl, text or auto", format);
  if (t.threads < 0) fail("option --threads: must be >= 0, got {}", t.threads);
  for (const std::string& s : specials) t.bpe.specials.push_back(parse_special(s));
  if (t.tokenizer == "byte" && (!specials.empty() || !t.bpe.pattern.empty() || t.allow_special))
    fail("options --special, --pattern and --allow_special need a BPE --tokenizer FILE");
  t.progress = true;
  const TokenizeReport r = tokenize_corpus(inputs, out, t);
  fmt::print("{} -> {}.bin/.idx in {:.1f} s ({:.1f} MB/s)\n", to_string(r), out, r.seconds,
             r.seconds > 0 ? r.bytes / 1e6 / r.seconds : 0.0);
  return 0;
}

int cmd_data_stats(int argc, const char* const* argv) {
  std::string path;
  po::options_description o("sambay data stats");
  o.add_options()("path", po::value(&path)->required(), "dataset (positional)");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay data stats PATH", "path")) return 0;
  fmt::print("{}", dataset_stats(path));
  return 0;
}

int cmd_data_phonebook(int argc, const char* const* argv) {
  std::string out;
  int64_t docs = 0, entries = 0;
  uint64_t seed = 0;
  po::options_description o("sambay data phonebook");
  o.add_options()("out", po::value(&out)->required(), "output prefix")
      ("documents", po::value(&docs)->default_value(2000), "phonebooks to write")
      ("entries", po::value(&entries)->default_value(20), "entries per phonebook")
      ("seed", po::value(&seed)->default_value(1), "generator seed");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay data phonebook --out PREFIX [options]")) return 0;
  write_phonebook_dataset(out, docs, entries, seed);
  fmt::print("{} phonebooks of {} entries -> {}.bin/.idx\n", docs, entries, out);
  return 0;
}

int cmd_info(int argc, const char* const* argv) {
  int64_t seq_len = 0;
  po::options_description o("sambay info");
  o.add_options()("seq_len", po::value(&seq_len)->default_value(4096), "sequence length for FLOPs");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay info [--seq_len L]")) return 0;
  fmt::print("{:<32} {:>8} {:>6} {:>6} {:>6} {:>12} {:>12} {:>16}\n", "preset", "params", "layers",
             "d", "head", "GFLOP/token", "ArchScale", "activations(MiB)");
  for (const std::string& name : model_preset_names()) {
    const ModelConfig c = model_preset(name);
    const double params = static_cast<double>(parameter_count(c));
    const std::string count = params >= 1e9 ? fmt::format("{:.2f}B", params / 1e9)
                                            : fmt::format("{:.3g}M", params / 1e6);
    fmt::print("{:<32} {:>8} {:>6} {:>6} {:>6} {:>12.2f} {:>12.2f} {:>16.0f}\n", name, count,
               c.n_layers(), c.d_model, c.tied_embedding ? "tied" : "untied",
               training_flops_per_token(c, seq_len) / 1e9,
               archscale_estimated_flops_per_token(c, seq_len) / 1e9,
               activation_bytes(c, 1, seq_len, false, 2) / 1048576.0);
  }
  fmt::print("(training FLOPs per token for sequences of {} tokens: sambay's exact count, and "
             "ArchScale's estimate_flops; bf16 activations for one sequence, no recompute)\n",
             seq_len);
  return 0;
}

int dispatch(int argc, const char* const* argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version") {
    fmt::print("sambay {} (git {})\n", SAMBAY_VERSION, SAMBAY_GIT_COMMIT);
    return 0;
  }
  if (cmd == "train") return cmd_train(argc - 1, argv + 1);
  if (cmd == "ckpt") return cmd_ckpt(argc - 1, argv + 1);
  if (cmd == "info") return cmd_info(argc - 1, argv + 1);
  if (cmd == "data") {
    if (argc < 3 || !std::strcmp(argv[2], "--help") || !std::strcmp(argv[2], "-h")) {
      std::cout << kDataUsage;
      return argc < 3 ? 2 : 0;
    }
    const std::string sub = argv[2];
    if (sub == "tokenize") return cmd_data_tokenize(argc - 2, argv + 2);
    if (sub == "stats") return cmd_data_stats(argc - 2, argv + 2);
    if (sub == "phonebook") return cmd_data_phonebook(argc - 2, argv + 2);
    fail("unknown command 'data {}' (valid: tokenize, stats, phonebook)", sub);
  }
  fail("unknown command '{}' (see sambay --help)", cmd);
}

}  // namespace
}  // namespace sambay

int main(int argc, char** argv) {
  try {
    return sambay::dispatch(argc, argv);
  } catch (const sambay::Error& e) {
    // Under MPI this also ends the other ranks, which may be waiting for this one.
    return sambay::report_fatal_error(fmt::format("error: {}", e.what()), 2);
  } catch (const std::bad_alloc&) {
    return sambay::report_fatal_error(
        "error: out of memory: the model, batch or data need more memory than this machine has "
        "(reduce --micro_batch, --seq_len or the model's sizes)",
        2);
  } catch (const std::exception& e) {
    return sambay::report_fatal_error(fmt::format("internal error: {}", e.what()), 3);
  }
}
