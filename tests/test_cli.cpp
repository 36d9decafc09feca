// The sambay command end to end: bad input gets an error naming the file and the field, and a
// short training run on generated data lowers the validation loss.
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <array>
#include <cstdio>
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
      "--eval_batches 4 --log_every 20 --threads 1 --out_dir {}",
      data, (dir / "run").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // The run directory holds the resolved config and one JSON line per logged step.
  EXPECT_TRUE(fs::exists(dir / "run" / "config.ini"));
  std::ifstream metrics(dir / "run" / "metrics.jsonl");
  std::vector<double> valid;
  for (std::string line; std::getline(metrics, line);) {
    const size_t at = line.find("\"valid_loss\":");
    if (at != std::string::npos) valid.push_back(std::stod(line.substr(at + 13)));
  }
  ASSERT_EQ(valid.size(), 2u) << r.output;
  EXPECT_NEAR(valid[0], std::log(257.0), 0.3);  // near uniform at initialisation
  EXPECT_LT(valid[1], valid[0] - 1.0) << r.output;
  // The run's final checkpoint answers the phonebook eval (accuracy is near 0 for this model;
  // the command's decoding is checked in test_model's greedy test).
  RunResult eval = run_sambay(fmt::format("ckpt phonebook {} --queries 2 --entries 3",
                                          (dir / "run").string()));
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  EXPECT_NE(eval.output.find("exact-match accuracy"), std::string::npos) << eval.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sambay
