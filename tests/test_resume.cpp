// The sambay command end to end: a run killed with SIGKILL at a random step (after at least one
// checkpoint) and resumed with --resume auto logs the same loss, gradient norm and validation
// loss at every step, to the last bit, as a run that was never interrupted; the same after
// SIGUSR1 or SIGTERM (checkpoint, exit code 75, resume) and when the newest checkpoint is
// damaged (the resume falls back to the previous one); and the ckpt subcommands.
#include "core/check.h"
#include "io/checkpoint.h"
#include "io/checkpoint_dir.h"
#include "io/json.h"
#include "io/phonebook.h"
#include "launch/preemption.h"
#include "tests/io_test_util.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

extern char** environ;

namespace sambay {
namespace {

namespace fs = std::filesystem;
using testing::ScratchDir;
using testing::read_bytes;

std::string text_of(const std::string& path) {
  const std::vector<uint8_t> b = read_bytes(path);
  return std::string(b.begin(), b.end());
}

// Starts `sambay args...` with stdout and stderr going to `log`.
pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv = {const_cast<char*>(SAMBAY_BINARY)};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, SAMBAY_BINARY, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail("cannot start {}: {}", SAMBAY_BINARY, std::strerror(rc));
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Runs to completion; returns the exit code (the log is shown when it is not `expected`).
int run(const std::vector<std::string>& args, const std::string& log, int expected = 0) {
  const int status = wait_for(spawn(args, log));
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  EXPECT_EQ(code, expected) << "sambay " << fmt::format("{}", fmt::join(args, " ")) << "\n"
                            << text_of(log);
  return code;
}

// Polls every millisecond until `ready` or 60 s have passed.
bool wait_until(const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// One line of metrics.jsonl: the numbers as the trainer printed them.
struct Entry {
  int64_t step = -1;
  std::map<std::string, std::string> numbers;  // key -> text ("{}" of a double: exact)
  int64_t resumed_from = -1;                  // the resume marker line
};

std::vector<Entry> read_metrics(const std::string& path) {
  std::vector<Entry> out;
  const std::string text = text_of(path);
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    Json j;
    try {
      j = parse_json(line, path);
    } catch (const Error&) {
      continue;  // a line cut by SIGKILL
    }
    Entry e;
    for (const auto& [k, v] : j.items()) {
      if (k == "step") e.step = json_int(v, "step");
      if (k == "resumed_from_step") e.resumed_from = json_int(v, k);
      if (k == "loss" || k == "grad_norm" || k == "valid_loss" || k == "lr") e.numbers[k] = v.dump();
    }
    if (!e.numbers.empty() || e.resumed_from >= 0) out.push_back(e);
  }
  return out;
}

// Training logs by step (one entry per step, and separately per validation) of a run.
using Log = std::map<std::pair<int64_t, bool>, std::map<std::string, std::string>>;

void add(Log& log, const Entry& e) {
  const bool valid = e.numbers.count("valid_loss") > 0;
  log[{e.step, valid}] = e.numbers;
}

struct ResumeTest : ::testing::Test {
  ScratchDir dir;
  static constexpr int64_t kSteps = 12;
  std::string data = dir.file("phonebook");

  void SetUp() override { write_phonebook_dataset(data, 150, 5, 3); }

  std::vector<std::string> model_args;  // more model.<field> options (a test may set them)

  std::vector<std::string> train_args(const std::string& out_dir, int64_t steps = kSteps) const {
    std::vector<std::string> args = {
        "train",      "--data",         data,   "--model",       "tiny-sambay-da",
        "--model.vocab", "257",         "--seq_len", "32",       "--micro_batch",
        "2",          "--grad_accum",   "2",    "--steps",       std::to_string(steps),
        "--warmup",   "2",              "--lr", "3e-3",          "--log_every",
        "1",          "--eval_every",   "4",    "--eval_batches", "2",
        "--threads",  "2",              "--out_dir", out_dir};
    args.insert(args.end(), model_args.begin(), model_args.end());
    return args;
  }

  Log reference() {
    const std::string out = dir.file("reference");
    run(train_args(out), dir.file("reference.log"));
    Log log;
    for (const Entry& e : read_metrics(out + "/metrics.jsonl")) add(log, e);
    EXPECT_EQ(log.size(), static_cast<size_t>(kSteps + kSteps / 4 + 1));  // steps, validations
    return log;
  }

  // Checks an interrupted-and-resumed run's metrics against the reference: every entry the same,
  // the resumed part complete. Returns the step the resume started from.
  int64_t compare(const std::string& out_dir, const Log& ref) {
    const std::vector<Entry> entries = read_metrics(out_dir + "/metrics.jsonl");
    int64_t resumed_from = -1;
    Log after;
    for (const Entry& e : entries) {
      if (e.resumed_from >= 0) {
        EXPECT_EQ(resumed_from, -1) << "resumed twice";
        resumed_from = e.resumed_from;
        continue;
      }
      const bool valid = e.numbers.count("valid_loss") > 0;
      auto it = ref.find({e.step, valid});
      if (it == ref.end()) {
        ADD_FAILURE() << "step " << e.step << " is not in the reference";
        continue;
      }
      EXPECT_EQ(e.numbers, it->second) << "step " << e.step << (valid ? " (validation)" : "")
                                       << (resumed_from >= 0 ? " after" : " before")
                                       << " the resume";
      if (resumed_from >= 0) add(after, e);
    }
    EXPECT_GE(resumed_from, 1);
    for (int64_t s = resumed_from + 1; s <= kSteps; ++s)
      EXPECT_TRUE(after.count({s, false})) << "the resumed run did not log step " << s;
    return resumed_from;
  }
};

class KillAndResume : public ResumeTest, public ::testing::WithParamInterface<bool> {};

TEST_P(KillAndResume, LaterLossesAreBitIdenticalToAnUninterruptedRun) {
  const bool damage_newest = GetParam();
  const Log ref = reference();
  const std::string out = dir.file("killed");
  std::vector<std::string> args = train_args(out);
  args.insert(args.end(), {"--save_every", "1"});
  std::random_device rd;
  const int64_t kill_after = 2 + rd() % (kSteps - 6);  // a checkpoint before, steps after
  std::printf("SIGKILL once checkpoint %lld is complete\n", static_cast<long long>(kill_after));
  const pid_t pid = spawn(args, dir.file("killed.log"));
  const std::string target = fmt::format("{}/checkpoints/step_{:08}", out, kill_after);
  ASSERT_TRUE(wait_until([&] { return fs::exists(target); })) << text_of(dir.file("killed.log"));
  kill(pid, SIGKILL);
  const int status = wait_for(pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the run ended before the kill:\n" << text_of(dir.file("killed.log"));

  std::string damaged;
  int64_t damaged_step = -1;
  if (damage_newest) {
    const std::vector<StepDir> dirs = list_checkpoints(out + "/checkpoints");
    ASSERT_GE(dirs.size(), 2u);
    damaged = dirs[0].path;
    damaged_step = dirs[0].step;
    fs::resize_file(damaged + "/rank_00000.h5", fs::file_size(damaged + "/rank_00000.h5") - 3);
  }
  run(train_args(out), dir.file("resumed.log"));
  const int64_t from = compare(out, ref);
  EXPECT_GE(from, kill_after - (damage_newest ? 1 : 0));
  const std::string log = text_of(dir.file("resumed.log"));
  if (damage_newest) {
    EXPECT_NE(log.find(damaged + " is damaged and is skipped"), std::string::npos) << log;
    EXPECT_NE(log.find("truncated"), std::string::npos) << log;
    EXPECT_LT(from, damaged_step);
  }
  std::printf("resumed from step %lld%s\n", static_cast<long long>(from),
              damage_newest ? " (the newest was damaged)" : "");
}

INSTANTIATE_TEST_SUITE_P(Newest, KillAndResume, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Damaged" : "Intact"; });

class Preempted : public ResumeTest, public ::testing::WithParamInterface<int> {};

TEST_P(Preempted, SignalWritesACheckpointExitsWith75AndResumesBitIdentically) {
  const int sig = GetParam();
  const Log ref = reference();
  const std::string out = dir.file("preempted");
  std::vector<std::string> args = train_args(out);
  args.insert(args.end(), {"--save_every", "0"});  // the signal's checkpoint is the only one
  // Each step is a few milliseconds: keep the run alive by signalling early, at the first
  // logged step.
  const pid_t pid = spawn(args, dir.file("preempted.log"));
  ASSERT_TRUE(wait_until([&] {
    for (const Entry& e : read_metrics(out + "/metrics.jsonl"))
      if (e.step >= 1) return true;
    return false;
  }));
  kill(pid, sig);
  const int status = wait_for(pid);
  const std::string log = text_of(dir.file("preempted.log"));
  ASSERT_TRUE(WIFEXITED(status)) << log;
  ASSERT_EQ(WEXITSTATUS(status), kExitRequeue) << log;
  EXPECT_NE(log.find(sig == SIGUSR1 ? "SIGUSR1 received" : "SIGTERM received"), std::string::npos)
      << log;
  const std::vector<StepDir> dirs = list_checkpoints(out + "/checkpoints");
  ASSERT_EQ(dirs.size(), 1u);
  ASSERT_LT(dirs[0].step, kSteps) << "the signal came too late to test a resume";
  EXPECT_EQ(text_of(out + "/checkpoints/latest"), fmt::format("step_{:08}\n", dirs[0].step));

  run(train_args(out), dir.file("resumed.log"));
  EXPECT_EQ(compare(out, ref), dirs[0].step);
  // The finished run wrote its final checkpoint.
  EXPECT_EQ(list_checkpoints(out + "/checkpoints")[0].step, kSteps);
}

INSTANTIATE_TEST_SUITE_P(Slurm, Preempted, ::testing::Values(SIGUSR1, SIGTERM),
                         [](const auto& info) { return info.param == SIGUSR1 ? "Sigusr1" : "Sigterm"; });

// The untied head under ArchScale's μP++ (zero readout, its init, the depth rule): killed after
// a checkpoint and resumed, every later loss, norm and lr is the uninterrupted run's.
TEST_F(ResumeTest, UntiedMupHeadResumesBitIdentically) {
  model_args = {"--model.tied_embedding", "false", "--model.init",            "archscale",
                "--model.mup_base_width", "8",     "--model.mup_base_depth",  "4",
                "--model.mup_base_head_dim", "4"};
  const Log ref = reference();
  const std::string out = dir.file("killed");
  std::vector<std::string> args = train_args(out);
  args.insert(args.end(), {"--save_every", "1"});
  const pid_t pid = spawn(args, dir.file("killed.log"));
  ASSERT_TRUE(wait_until([&] { return fs::exists(out + "/checkpoints/step_00000005"); }))
      << text_of(dir.file("killed.log"));
  kill(pid, SIGKILL);
  wait_for(pid);
  run(train_args(out), dir.file("resumed.log"));
  EXPECT_GE(compare(out, ref), 5);
  // The start of the run names every group's lr, weight decay and init; both FLOPs conventions
  // are logged.
  const std::string log = text_of(dir.file("reference.log"));
  for (const char* part :
       {"muP++ base width 8, depth 4, head dim 4; untied head, init archscale",
        "parameter groups", "wd 0  init zeros", "lm_head.weight", "init uniform bound",
        "ArchScale estimate_flops", "GFLOP/s exact / ArchScale-est"})
    EXPECT_NE(log.find(part), std::string::npos) << part << "\n" << log;
  const std::string metrics = text_of(dir.file("reference") + "/metrics.jsonl");
  EXPECT_NE(metrics.find("\"flops_exact\":"), std::string::npos);
  EXPECT_NE(metrics.find("\"flops_archscale_estimate\":"), std::string::npos);
}

TEST_F(ResumeTest, CkptCommandsInspectExportImportAndTrainFromTheImport) {
  const std::string out = dir.file("run");
  run(train_args(out, 3), dir.file("train.log"));
  const std::string ckpt = out + "/checkpoints/step_00000003";

  run({"ckpt", "inspect", out}, dir.file("inspect.log"));
  const std::string inspect = text_of(dir.file("inspect.log"));
  for (const char* part : {"step 3:", "model/layers.0/mixer/in_proj/weight", "crc32c",
                           "dp 1 x tp 1 x cp 1", "verified"})
    EXPECT_NE(inspect.find(part), std::string::npos) << part << "\n" << inspect;

  // tiny-sambay-da is not runnable by the release's code, so export needs --force.
  run({"ckpt", "export", "--format", "hf", ckpt, dir.file("hf")}, dir.file("export1.log"), 2);
  EXPECT_NE(text_of(dir.file("export1.log")).find("d_inner"), std::string::npos);
  run({"ckpt", "export", "--format", "hf", "--force", ckpt, dir.file("hf")}, dir.file("export.log"));
  run({"ckpt", "import", "--format", "hf", dir.file("hf"), "--out", dir.file("imported")},
      dir.file("import.log"));
  const LoadedCheckpoint a = load_checkpoint(ckpt, std::nullopt);
  const LoadedCheckpoint b = load_checkpoint(dir.file("imported/step_00000000"), a.info.model);
  ASSERT_EQ(a.params.size(), b.params.size());
  EXPECT_EQ(std::memcmp(a.params.data(), b.params.data(), a.params.size() * 4), 0);
  EXPECT_EQ(b.info.step, 0);

  // Training continues from the imported weights; a fresh run refuses to overwrite checkpoints.
  std::vector<std::string> args = train_args(dir.file("from_import"), 2);
  args.insert(args.end(), {"--resume", dir.file("imported")});
  run(args, dir.file("from_import.log"));
  EXPECT_NE(text_of(dir.file("from_import.log")).find("resume: from " + dir.file("imported/step_00000000")),
            std::string::npos);
  args = train_args(out, 5);
  args.insert(args.end(), {"--resume", "none"});
  run(args, dir.file("none.log"), 2);
  EXPECT_NE(text_of(dir.file("none.log")).find("already holds checkpoints"), std::string::npos);
}

// Checkpoints written by earlier formats resume: version 1 (tests/fixtures/checkpoint_v1,
// sambay 0.1.0 at git 504c6ee, before run ids) and version 2 (tests/fixtures/checkpoint_v2, git
// 6466dc1, before each rank stored its own pieces). The run continues from the fixture's step,
// its new checkpoints are of the current version, and the losses of the steps after it are
// those the old version logged (to 1e-6 relative: a fixture made on another machine, whose BLAS
// may round differently; on the machine that made it they are equal bit for bit).
class OldFormat : public ResumeTest, public ::testing::WithParamInterface<int> {};

TEST_P(OldFormat, ACheckpointOfAnEarlierFormatVersionResumes) {
  const std::string fixture = std::string(SAMBAY_FIXTURES) + "/checkpoint_v" + std::to_string(GetParam());
  EXPECT_EQ(read_checkpoint_info(fixture + "/step_00000002").format_version, GetParam());
  const std::string out = dir.file("from_old");
  std::vector<std::string> args = {
      "train", "--data", data, "--model", "tiny-sambay-da", "--model.vocab", "257",
      "--model.layers", "mamba,sliding_window", "--model.kv_source_layer", "-1",
      "--model.memory_layer", "-1", "--seq_len", "32", "--micro_batch", "2", "--grad_accum", "2",
      "--steps", "4", "--warmup", "2", "--lr", "3e-3", "--log_every", "1", "--eval_every", "0",
      "--threads", "1", "--save_every", "2", "--out_dir", out,
      "--resume", fixture + "/step_00000002"};
  run(args, dir.file("from_old.log"));
  const std::string log = text_of(dir.file("from_old.log"));
  EXPECT_NE(log.find("resume: from " + fixture + "/step_00000002 (step 2, 8 samples consumed)"),
            std::string::npos)
      << log;
  std::map<int64_t, double> old_loss, new_loss;
  for (const Entry& e : read_metrics(fixture + "/metrics.jsonl"))
    if (e.numbers.count("loss")) old_loss[e.step] = std::stod(e.numbers.at("loss"));
  int64_t resumed_from = -1;
  for (const Entry& e : read_metrics(out + "/metrics.jsonl")) {
    if (e.resumed_from >= 0) resumed_from = e.resumed_from;
    if (e.numbers.count("loss")) new_loss[e.step] = std::stod(e.numbers.at("loss"));
  }
  EXPECT_EQ(resumed_from, 2);
  ASSERT_EQ(new_loss.size(), 2u);
  for (const auto& [step, loss] : new_loss) {
    ASSERT_TRUE(old_loss.count(step)) << step;
    EXPECT_NEAR(loss, old_loss[step], 1e-6 * old_loss[step]) << "step " << step;
    std::printf("step %lld: loss %.17g, the old version logged %.17g%s\n",
                static_cast<long long>(step), loss, old_loss[step],
                loss == old_loss[step] ? " (bit for bit)" : "");
  }
  const CheckpointInfo now = read_checkpoint_info(out + "/checkpoints/step_00000004");
  EXPECT_EQ(now.format_version, kCheckpointFormatVersion);
  EXPECT_EQ(now.run_id.size(), 32u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, OldFormat, ::testing::Values(1, 2),
                         [](const auto& info) { return "Version" + std::to_string(info.param); });

// The markers that start every process's records, and the run id they share.
TEST_F(ResumeTest, EveryStartAndResumeIsMarkedInTheMetrics) {
  const std::string out = dir.file("marked");
  run(train_args(out, 2), dir.file("first.log"));
  run(train_args(out, 3), dir.file("second.log"));
  std::vector<Json> marks;
  const std::string text = text_of(out + "/metrics.jsonl");
  for (size_t a = 0, b; a < text.size(); a = b + 1) {
    b = text.find('\n', a);
    const Json j = parse_json(text.substr(a, b - a), out);
    const std::string kind = json_string(j.at("kind"), "kind");
    if (kind == "run_start" || kind == "resume") marks.push_back(j);
  }
  ASSERT_EQ(marks.size(), 2u) << text;
  EXPECT_EQ(marks[0]["kind"], "run_start");
  EXPECT_EQ(marks[0]["step"], 0);
  EXPECT_EQ(marks[1]["kind"], "resume");
  EXPECT_EQ(marks[1]["step"], 2);
  EXPECT_EQ(marks[1]["resumed_from_step"], 2);
  const std::string run_id = json_string(marks[0]["run_id"], "run_id");
  EXPECT_EQ(run_id.size(), 32u);
  EXPECT_EQ(marks[1]["run_id"], run_id);
  EXPECT_EQ(read_checkpoint_info(out + "/checkpoints/step_00000003").run_id, run_id);
}

}  // namespace
}  // namespace sambay
