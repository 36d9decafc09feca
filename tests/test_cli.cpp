// The sambay command end to end: bad input gets an error naming the file and the field, and a
// short training run on generated data lowers the validation loss.
#include "core/check.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/json.h"
#include "launch/command_line.h"
#include "launch/train_config.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <tuple>

namespace sambay {
namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code;
  std::string output;  // stdout and stderr together
};

RunResult run_sambay(const std::string& args) {
  const std::string cmd = fmt::format("{} {} 2>&1", SAMBAY_BINARY, args);
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

fs::path scratch_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / fmt::format("sambay_cli_{}_{}", name, getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A small corpus with learnable structure: repeated sentences with a counter.
std::string make_corpus(const fs::path& dir) {
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < 300; ++i)
    docs.push_back(byte_encode(fmt::format("the quick brown fox {} jumps over the lazy dog {}.\n",
                                           i % 10, i % 7)));
  for (auto& d : docs) d.push_back(kByteEod);
  const std::string prefix = (dir / "corpus").string();
  write_indexed_dataset(prefix, docs, TokenDType::u16);
  return prefix;
}

TEST(Cli, UnknownOptionIsNamed) {
  RunResult r = run_sambay("train --no_such_option 3");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no_such_option"), std::string::npos) << r.output;
}

TEST(Cli, BadModelFieldIsNamed) {
  const fs::path dir = scratch_dir("badfield");
  const std::string data = make_corpus(dir);
  RunResult r = run_sambay(fmt::format("train --data {} --model.d_model 12x", data));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.d_model"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, ConfigFileErrorsNameTheFile) {
  const fs::path dir = scratch_dir("badconfig");
  const fs::path ini = dir / "run.ini";
  std::ofstream(ini) << "steps = 10\nlearning_rate = 3\n";
  RunResult r = run_sambay(fmt::format("train --config {}", ini.string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(ini.string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("learning_rate"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

// Parallel layouts the model or the sequence cannot take are refused before any work, naming
// the option and what does not divide (a single process: the checks do not need the ranks).
TEST(Cli, ImpossibleParallelLayoutsAreNamed) {
  const fs::path dir = scratch_dir("badlayout");
  const std::string data = make_corpus(dir);
  const struct {
    std::string flags, expected;
  } cases[] = {
      {"--model tiny-sambay-da --tp 2", "option --tp: model config 'tiny-sambay-da': n_kv_heads = 2"},
      {"--model tiny-sambay --tp 3", "option --tp: model config 'tiny-sambay': d_inner = 14 is not "
                                     "divisible by tensor-parallel size 3"},
      {"--model tiny-sambay --seq_len 30 --cp 2", "option --cp: seq_len = 30 is not divisible by 2 cp = 4"},
      {"--model tiny-sambay --seq_len 8 --cp 2", "option --cp: chunks of 2 positions"},
      {"--model tiny-sambay --sequence_parallel true", "option --sequence_parallel: splits rows"},
  };
  for (const auto& c : cases) {
    RunResult r = run_sambay(fmt::format("train --data {} {}", data, c.flags));
    EXPECT_EQ(r.exit_code, 2) << c.flags << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.flags << "\n" << r.output;
  }
  fs::remove_all(dir);
}

// --recompute takes none, auto (the default) and all, and the old booleans of earlier configs
// (true = all, false = none); the saved config holds the mode's name, the log says what was
// chosen, and recompute does not change a bit of the training (CPU runs of 3 steps).
TEST(Cli, RecomputeOptionTakesModesAndOldBooleans) {
  const fs::path dir = scratch_dir("recompute");
  const std::string data = make_corpus(dir);
  RunResult bad = run_sambay(fmt::format("train --data {} --recompute sometimes", data));
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("option --recompute: 'sometimes' is not none, auto or all"),
            std::string::npos)
      << bad.output;

  auto train = [&](const std::string& name, const std::string& recompute_line) {
    const fs::path ini = dir / (name + ".ini");
    std::ofstream(ini) << recompute_line;
    RunResult r = run_sambay(fmt::format(
        "train --config {} --device cpu --model tiny-sambay-da --model.vocab 257 --data {} "
        "--seq_len 16 --micro_batch 2 --steps 3 --warmup 0 --log_every 1 --eval_every 0 "
        "--threads 1 --out_dir {}",
        ini.string(), data, (dir / name).string()));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::ifstream saved(dir / name / "config.ini");
    std::stringstream config, metrics;
    config << saved.rdbuf();
    metrics << std::ifstream(dir / name / "metrics.jsonl").rdbuf();
    std::string losses;  // the logged losses, as printed
    for (std::string line; std::getline(metrics, line);)
      if (size_t at = line.find("\"loss\":"); at != std::string::npos)
        losses += line.substr(at, line.find(',', at) - at) + " ";
    return std::tuple{r.output, config.str(), losses};
  };
  const auto [old_true, old_true_config, all_losses] = train("old_true", "recompute = true\n");
  EXPECT_NE(old_true_config.find("recompute = all\n"), std::string::npos) << old_true_config;
  EXPECT_NE(old_true.find("recompute all: the CPU backend"), std::string::npos) << old_true;
  EXPECT_NE(old_true.find("recomputed layers: mamba 0, 2, 4 (3 of 3)"), std::string::npos)
      << old_true;
  const auto [old_false, old_false_config, none_losses] = train("old_false", "recompute = false\n");
  EXPECT_NE(old_false_config.find("recompute = none\n"), std::string::npos) << old_false_config;
  const auto [automatic, auto_config, auto_losses] = train("auto", "");
  EXPECT_NE(auto_config.find("recompute = auto\n"), std::string::npos) << auto_config;
  EXPECT_NE(automatic.find("keeps everything: none"), std::string::npos) << automatic;
  EXPECT_FALSE(all_losses.empty());
  EXPECT_EQ(all_losses, none_losses);
  EXPECT_EQ(auto_losses, none_losses);
  fs::remove_all(dir);
}

TEST(Cli, MissingDataIsNamed) {
  RunResult r = run_sambay("train --data /nonexistent/corpus --steps 1 --warmup 0");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/corpus"), std::string::npos) << r.output;
}

// Every file and directory under `dir`, with its size and modification time: what a dry run
// must leave as it was.
std::string tree_state(const fs::path& dir) {
  std::string out;
  if (!fs::exists(dir)) return "absent";
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out += fmt::format("{} {} {}\n", e.path().string(),
                       e.is_regular_file() ? int64_t(e.file_size()) : int64_t(-1),
                       e.last_write_time().time_since_epoch().count());
  return out;
}

const char* kTinyRun = "--model tiny-sambay-da --model.vocab 257 --seq_len 32 --micro_batch 2 "
                       "--warmup 1 --eval_every 0 --threads 1";

TEST(Cli, DryRunPlansTheRunChecksItsFilesAndWritesNothing) {
  const fs::path dir = scratch_dir("dryrun");
  const std::string data = make_corpus(dir);
  const fs::path out = dir / "run";
  // A fresh run: the plan, and the run directory is not even created.
  RunResult r = run_sambay(fmt::format("train --data {} {} --steps 4 --out_dir {} --dry_run", data,
                                       kTinyRun, out.string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* part :
       {"sambay train --dry_run: model tiny-sambay-da", "layout: world 1", "memory per rank",
        "host ", "weights", "AdamW m, v", "activations", "checkpoint snapshot", "this node: 1 rank",
        "FLOPs per token:", "data: ", "train / ", "run directory", "writable",
        "a fresh start (no checkpoint in", "dry run: every check passed"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  EXPECT_FALSE(fs::exists(out)) << r.output;

  // A run with a checkpoint: the dry run names the checkpoint it would resume and leaves the
  // run directory exactly as it was.
  r = run_sambay(fmt::format("train --data {} {} --steps 2 --out_dir {}", data, kTinyRun,
                             out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string before = tree_state(out);
  r = run_sambay(fmt::format("train --data {} {} --steps 4 --out_dir {} --dry_run", data, kTinyRun,
                             out.string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resume from " + (out / "checkpoints" / "step_00000002").string() +
                          " (step 2, format 3"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(tree_state(out), before);

  // What is unusable is named, with exit 2.
  const std::pair<std::string, std::vector<std::string>> bad[] = {
      {"--steps 4 --out_dir " + out.string() + " --resume none",
       {"option --resume none", "already holds checkpoints"}},
      {"--steps 4 --out_dir " + (dir / "other").string() + " --resume " +
           (dir / "missing").string(),
       {(dir / "missing").string()}},
      {"--steps 4 --out_dir " + (dir / "corpus.bin" / "run").string(),
       {"the checkpoints directory", "corpus.bin", "is not a directory"}},
      {"--steps 4 --out_dir " + out.string() + " --model.d_model 16",
       {"written for a different model", "model.d_model: 12 in the checkpoint, 16 here"}},
      {"--steps 4 --out_dir " + (dir / "x").string() + " --peak_tflops fast",
       {"option --peak_tflops"}},
  };
  for (const auto& [args, parts] : bad) {
    r = run_sambay(fmt::format("train --data {} {} {} --dry_run", data, kTinyRun, args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    for (const std::string& part : parts)
      EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
    EXPECT_EQ(r.output.find("dry run: every check passed"), std::string::npos) << r.output;
  }
  r = run_sambay(fmt::format("train --data {}/missing {} --out_dir {} --dry_run", dir.string(),
                             kTinyRun, out.string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(dir.string() + "/missing"), std::string::npos) << r.output;
  EXPECT_EQ(tree_state(out), before);
  fs::remove_all(dir);
}

// A GPU run planned on a machine without one (a login node, CI): the plan is for an H200, with
// the expected speed from the measured single-GPU profile of the preset, scaled to a given peak.
TEST(Cli, DryRunPlansAGpuRunWithTheMeasuredProfile) {
  const fs::path dir = scratch_dir("dryrun_gpu");
  const std::string data = make_corpus(dir);
  const std::string common = fmt::format(
      "train --data {} --model sambay-da-1b --device cuda --seq_len 4096 --steps 100 "
      "--out_dir {} --dry_run",
      data, (dir / "run").string());
  RunResult r = run_sambay(common + " --micro_batch 4");
  if (r.output.find("none visible here") == std::string::npos)
    GTEST_SKIP() << "a GPU is visible: the plan is for it";
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* part :
       {"planned for an NVIDIA H200", "device ", "weights fp32 + bf16", "of a GPU of 139.80 GiB",
        "host RSS target", "expected speed: ", "tokens/s per GPU",
        "from sambay-da-1b at 4 x 4096: 331.9 ms per step", "of 989.4 TFLOP/s"})
    EXPECT_NE(r.output.find(part), std::string::npos) << part << "\n" << r.output;
  // A peak given by hand scales the expected tokens/s with it.
  auto expected = [](const std::string& out) {
    const size_t at = out.find("expected speed: ");
    return at == std::string::npos ? 0.0 : std::stod(out.substr(at + 16));
  };
  const RunResult b200 = run_sambay(common + " --micro_batch 4 --peak_tflops 2250");
  EXPECT_EQ(b200.exit_code, 0) << b200.output;
  EXPECT_NEAR(expected(b200.output) / expected(r.output), 2250 / 989.4, 1e-3) << b200.output;
  // A micro-batch that cannot fit even with every layer recomputed, and one that does not fit
  // without recompute, are named.
  r = run_sambay(common + " --micro_batch 512");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("recompute auto: the activations of micro-batch 512 x 4096"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("lower --micro_batch"), std::string::npos) << r.output;
  r = run_sambay(common + " --micro_batch 64 --recompute none");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("GiB per GPU and the GPU has 139.80 GiB"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, ShortTrainingRunLowersValidationLoss) {
  const fs::path dir = scratch_dir("train");
  const std::string data = make_corpus(dir);
  RunResult r = run_sambay(fmt::format(
      "train --model tiny-sambay-da --model.vocab 257 --model.d_model 16 --data {} "
      "--seq_len 32 --micro_batch 4 --steps 60 --warmup 5 --lr 1e-2 --eval_every 60 "
      "--eval_batches 4 --log_every 20 --threads 1 --tensorboard --out_dir {}",
      data, (dir / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The run directory holds the resolved config and one JSON record per line: the run's start
  // (config, placement, commit), logged steps, validations, the checkpoint and the end.
  EXPECT_TRUE(fs::exists(dir / "run" / "config.ini"));
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  std::vector<Json> records;
  for (std::string line; std::getline(metrics, line);)
    records.push_back(parse_json(line, "metrics.jsonl"));
  ASSERT_GE(records.size(), 7u);
  std::vector<double> valid;
  std::vector<std::string> kinds;
  for (const Json& j : records) {
    kinds.push_back(j["kind"]);
    EXPECT_TRUE(j["wall_time"].is_number()) << j.dump();
    if (j["kind"] == "valid") valid.push_back(j["valid_loss"]);
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"run_start", "valid", "step", "step", "step",
                                             "step", "valid", "checkpoint", "host_memory",
                                             "end"}));
  // The end of the run: every rank's peak RSS beside the plan.
  const Json& memory = records[records.size() - 2];
  ASSERT_EQ(memory["peak_rss_bytes"].size(), 1u);
  EXPECT_GT(memory["peak_rss_bytes"][0].get<double>(), memory["planned_host_bytes"].get<double>());
  EXPECT_GT(memory["owned_state_bytes"].get<double>(), 0);
  const Json& start = records.front();
  EXPECT_EQ(start["config"]["steps"], 60);
  EXPECT_EQ(start["config"]["model.d_model"], 16);
  EXPECT_EQ(start["placement"]["world_size"], 1);
  EXPECT_EQ(start["placement"]["device"], "cpu");
  EXPECT_EQ(start["git_commit"].get<std::string>().size(), 40u);
  EXPECT_EQ(records.back()["reason"], "done");
  EXPECT_EQ(records.back()["steps_trained"], 60);
  ASSERT_EQ(valid.size(), 2u) << r.output;
  EXPECT_NEAR(valid[0], std::log(257.0), 0.3);  // near uniform at initialisation
  EXPECT_LT(valid[1], valid[0] - 1.0) << r.output;
  // TensorBoard's reader sees the same numbers (as float32).
  const std::string events = (dir / "events.json").string();
  const int status = std::system(
      fmt::format("'{}' '{}/tests/tensorboard/read_events.py' '{}' > '{}' 2>&1", SAMBAY_PYTHON3,
                  SAMBAY_SOURCE_DIR, (dir / "run" / "tensorboard").string(), events)
          .c_str());
  std::ifstream events_in(events);
  const std::string events_text((std::istreambuf_iterator<char>(events_in)), {});
  if (WEXITSTATUS(status) == 77) {
    std::printf("TensorBoard check skipped: %s", events_text.c_str());
  } else {
    ASSERT_EQ(status, 0) << events_text;
    const Json tb = parse_json(events_text, events);
    std::vector<Json> loss;
    for (const Json& j : records)
      if (j["kind"] == "step")
        loss.push_back(Json{j["step"], j["wall_time"], double(float(j["loss"].get<double>()))});
    EXPECT_EQ(tb["tags"]["train/loss"], Json(loss));
    EXPECT_EQ(tb["tags"]["valid/loss"].size(), 2u);
    for (const char* tag : {"train/lr", "train/grad_norm", "train/tokens_per_s",
                            "train/flops_per_s", "train/memory_mib"})
      EXPECT_EQ(tb["tags"][tag].size(), 4u) << tag;
  }
  // The run's final checkpoint answers the phonebook eval (accuracy is near 0 for this model;
  // the command's decoding is checked in test_model's greedy test).
  RunResult eval = run_sambay(fmt::format("ckpt phonebook {} --queries 2 --entries 3",
                                          (dir / "run").string()));
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("exact-match accuracy"), std::string::npos) << eval.output;
  fs::remove_all(dir);
}

// A loss that is not finite ends the run before the update, and metrics.jsonl still holds valid
// JSON: the step's numbers as null, then an end record saying why.
TEST(Cli, NonFiniteLossIsRecordedAsNullAndEndsTheRun) {
  const fs::path dir = scratch_dir("nan");
  const std::string data = make_corpus(dir);
  // Initial weights 1e30 times too large: the logits overflow at the first step.
  RunResult r = run_sambay(fmt::format(
      "train --model tiny-sambay-da --model.vocab 257 --model.init_multiplier 1e30 --data {} "
      "--seq_len 16 --micro_batch 2 --steps 5 --warmup 0 --log_every 1 --eval_every 0 "
      "--threads 1 --device cpu --out_dir {}",
      data, (dir / "run").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("step 1: non-finite loss"), std::string::npos) << r.output;
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  std::vector<Json> records;
  for (std::string line; std::getline(metrics, line);)
    records.push_back(parse_json(line, "metrics.jsonl"));  // every line parses
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0]["kind"], "run_start");
  EXPECT_EQ(records[1]["kind"], "step");
  EXPECT_EQ(records[1]["step"], 1);
  EXPECT_TRUE(records[1]["loss"].is_null()) << records[1].dump();
  EXPECT_EQ(records[2]["kind"], "end");
  EXPECT_EQ(records[2]["reason"], "non-finite loss");
  EXPECT_EQ(records[2]["steps_trained"], 0);
  fs::remove_all(dir);
}

// Parses `sambay train` flags (after "train") the way the command does.
TrainConfig parse_train(std::vector<std::string> flags) {
  flags.insert(flags.begin(), "train");
  std::vector<const char*> argv;
  for (const std::string& f : flags) argv.push_back(f.c_str());
  TrainConfig c;
  EXPECT_TRUE(parse_train_config(int(argv.size()), argv.data(), c));
  return c;
}

TEST(Cli, BooleanOptionsAreBareFlagsOrTakeAValue) {
  const TrainConfig defaults = parse_train({"--data", "x"});
  EXPECT_FALSE(defaults.tensorboard);
  EXPECT_TRUE(defaults.doc_masking);
  EXPECT_TRUE(parse_train({"--data", "x", "--tensorboard"}).tensorboard);
  EXPECT_TRUE(parse_train({"--tensorboard", "--data", "x"}).tensorboard);
  EXPECT_TRUE(parse_train({"--data", "x", "--tensorboard", "true"}).tensorboard);
  EXPECT_TRUE(parse_train({"--data", "x", "--tensorboard=yes"}).tensorboard);
  EXPECT_FALSE(parse_train({"--data", "x", "--tensorboard", "false"}).tensorboard);
  EXPECT_FALSE(parse_train({"--data", "x", "--tensorboard=0"}).tensorboard);
  const TrainConfig both = parse_train({"--tensorboard", "--doc_masking", "off", "--data", "x"});
  EXPECT_TRUE(both.tensorboard);
  EXPECT_FALSE(both.doc_masking);
  // A word that is no boolean is not taken as the flag's value: it is an error of its own, as
  // is any stray word.
  EXPECT_THROW(parse_train({"--data", "x", "--tensorboard", "maybe"}), Error);
  EXPECT_THROW(parse_train({"--data", "x", "--steps", "10", "20"}), Error);
}

TEST(Cli, ChoiceWithAValueWhenBare) {
  // --recompute is none, auto or all; alone it means all, and true/false mean all/none.
  EXPECT_EQ(parse_train({"--data", "x"}).recompute, "auto");
  EXPECT_EQ(parse_train({"--data", "x", "--recompute"}).recompute, "all");
  EXPECT_EQ(parse_train({"--recompute", "--data", "x"}).recompute, "all");
  EXPECT_EQ(parse_train({"--data", "x", "--recompute", "none"}).recompute, "none");
  EXPECT_EQ(parse_train({"--data", "x", "--recompute=auto"}).recompute, "auto");
  EXPECT_EQ(parse_train({"--data", "x", "--recompute", "true"}).recompute, "all");
  EXPECT_THROW(parse_train({"--data", "x", "--recompute", "some"}), Error);
}

TEST(Cli, BareFlagBeforeAPositionalArgumentStaysBare) {
  namespace po = boost::program_options;
  bool allow = false;
  int threads = 0;
  std::vector<std::string> inputs;
  po::options_description o;
  o.add_options()("allow_special", flag(&allow), "")("threads", po::value(&threads), "")(
      "input", po::value(&inputs), "");
  const char* argv[] = {"tokenize", "--allow_special", "corpus.jsonl", "--allow_special",
                        "false", "--threads", "3", "b.jsonl"};
  EXPECT_EQ(join_optional_values(8, argv, o),
            (std::vector<std::string>{"corpus.jsonl", "--allow_special=false", "--threads", "3",
                                      "b.jsonl", "--allow_special"}));
  po::positional_options_description pos;
  pos.add("input", -1);
  for (int n : {3, 4}) {  // the bare flag last, or before "--allow_special false"
    po::options_description parsed = o;
    po::variables_map vm;
    allow = false, inputs.clear();
    const char* args[] = {"tokenize", "--allow_special", "corpus.jsonl", "--threads", "2"};
    const char* args_off[] = {"tokenize", "--allow_special", "a.jsonl", "b.jsonl"};
    ASSERT_TRUE(parse_command_line(n == 3 ? 3 : 4, n == 3 ? args : args_off, parsed, pos, vm, ""));
    EXPECT_TRUE(allow);
    EXPECT_EQ(inputs, n == 3 ? std::vector<std::string>{"corpus.jsonl"}
                             : (std::vector<std::string>{"a.jsonl", "b.jsonl"}));
  }
}

TEST(Cli, HelpPrintsDefaultsAsWrittenAndExplainsModelFields) {
  const RunResult r = run_sambay("train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* part : {"--min_lr_ratio arg (=0.1)", "--valid_fraction arg (=0.01)",
                           "--lr arg (=0.001)", "--tensorboard [=true|false(=true)] (=false)",
                           "--recompute [=arg(=all)] (=auto)",
                           "--model.FIELD VALUE", "--model.d_model VALUE", "[model] section"})
    EXPECT_NE(r.output.find(part), std::string::npos) << "no \"" << part << "\" in\n" << r.output;
  EXPECT_EQ(r.output.find("0000000"), std::string::npos) << r.output;
}

TEST(Cli, DataAndCkptHelpListTheirCommands) {
  for (const char* args : {"data --help", "data"}) {
    const RunResult r = run_sambay(args);
    EXPECT_EQ(r.exit_code, std::string(args) == "data" ? 2 : 0) << args;
    for (const char* sub : {"tokenize", "stats", "phonebook"})
      EXPECT_NE(r.output.find(sub), std::string::npos) << args << ":\n" << r.output;
  }
  const RunResult ckpt = run_sambay("ckpt --help");
  EXPECT_EQ(ckpt.exit_code, 0);
  for (const char* sub : {"inspect", "export", "import", "bench", "phonebook"})
    EXPECT_NE(ckpt.output.find(sub), std::string::npos) << ckpt.output;
  const RunResult bad = run_sambay("data tokenise");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("unknown command 'data tokenise'"), std::string::npos) << bad.output;
}

TEST(Cli, InfoPrintsSmallModelsInMillions) {
  const RunResult r = run_sambay("info");
  EXPECT_EQ(r.exit_code, 0);
  std::istringstream lines(r.output);
  bool tiny = false, phi = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("demo-sambay-da ", 0) == 0) tiny = line.find("1.81M") != std::string::npos;
    if (line.rfind("phi4-mini-flash ", 0) == 0) phi = line.find("3.85B") != std::string::npos;
  }
  EXPECT_TRUE(tiny) << r.output;
  EXPECT_TRUE(phi) << r.output;
}

TEST(Cli, BpeDataIsCheckedAgainstTheModelAndItsTokenizerExported) {
  const fs::path dir = scratch_dir("bpe");
  // A small BPE vocabulary: the 256 bytes and two merges, <|eod|> = 300.
  const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::ofstream vocab(dir / "v.tiktoken");
  for (int b = 0; b < 256; ++b) vocab << b64[b >> 2] << b64[(b & 3) << 4] << "== " << b << "\n";
  vocab << "dGg= 256\nIHRo 257\n";  // "th", " th"
  vocab.close();
  std::ofstream corpus(dir / "c.jsonl");
  for (int i = 0; i < 200; ++i)
    corpus << fmt::format(R"({{"text": "the other thing {} then that"}})", i % 13) << "\n";
  corpus.close();
  const std::string data = (dir / "data").string();
  RunResult tok = run_sambay(fmt::format(
      "data tokenize --tokenizer {} --pattern '\\p{{L}}+| ?\\p{{L}}+|\\p{{N}}+|\\s+' "
      "--special '<|eod|>=300' --eod '<|eod|>' --out {} {}",
      (dir / "v.tiktoken").string(), data, (dir / "c.jsonl").string()));
  ASSERT_EQ(tok.exit_code, 0) << tok.output;
  const std::string model = "--model tiny-sambay-da --model.vocab 301 --model.eod_token 300";
  RunResult small = run_sambay(fmt::format(
      "train --data {} --model tiny-sambay-da --model.vocab 257 --steps 1 --warmup 0", data));
  EXPECT_EQ(small.exit_code, 2) << small.output;
  EXPECT_NE(small.output.find("data.tokenizer.json has ids up to 300"), std::string::npos)
      << small.output;
  EXPECT_NE(small.output.find("--model.vocab 301"), std::string::npos) << small.output;
  RunResult eod = run_sambay(fmt::format(
      "train --data {} --model tiny-sambay-da --model.vocab 301 --model.eod_token 7 --steps 1 "
      "--warmup 0", data));
  EXPECT_EQ(eod.exit_code, 2) << eod.output;
  EXPECT_NE(eod.output.find("ends documents with id 300"), std::string::npos) << eod.output;
  const std::string run = (dir / "run").string();
  RunResult train = run_sambay(fmt::format(
      "train --data {} {} --seq_len 16 --micro_batch 2 --steps 2 --warmup 0 --eval_every 0 "
      "--threads 1 --out_dir {}", data, model, run));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  RunResult exp = run_sambay(fmt::format("ckpt export --format hf --force {} {}", run,
                                         (dir / "hf").string()));
  ASSERT_EQ(exp.exit_code, 0) << exp.output;
  EXPECT_NE(exp.output.find("tokenizer.json"), std::string::npos) << exp.output;
  EXPECT_NE(exp.output.find("warning: vLLM's Phi4Flash cannot load this export"), std::string::npos)
      << exp.output;
  std::ifstream tokenizer_json(dir / "hf" / "tokenizer.json");
  std::string text((std::istreambuf_iterator<char>(tokenizer_json)), {});
  EXPECT_NE(text.find(R"("<|eod|>":300)"), std::string::npos);
  EXPECT_NE(text.find(R"("\\p{L}+| ?\\p{L}+|\\p{N}+|\\s+")"), std::string::npos);
  RunResult none = run_sambay(fmt::format("ckpt export --format hf --force --tokenizer none {} {}",
                                          run, (dir / "hf2").string()));
  ASSERT_EQ(none.exit_code, 0) << none.output;
  EXPECT_FALSE(fs::exists(dir / "hf2" / "tokenizer.json"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sambay
