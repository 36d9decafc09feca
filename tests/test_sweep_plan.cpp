#include "core/check.h"
#include "core/model.h"
#include "core/model_config.h"
#include "tools/sweep/collect.h"
#include "tools/sweep/depth_family.h"
#include "tools/sweep/ini.h"
#include "tools/sweep/sweep_plan.h"

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

namespace sambay::sweep {
namespace {

namespace fs = std::filesystem;

class DepthFamilyTest : public ::testing::TestWithParam<std::string> {};

// The depth rules reproduce core's depth-16 presets field by field (all but the name).
TEST_P(DepthFamilyTest, DepthSixteenIsTheCorePreset) {
  const std::string family = GetParam();
  auto fields = [](ModelConfig c) {
    c.name = "";
    return model_config_fields(c);
  };
  EXPECT_EQ(fields(depth_scaled_model(family, 16, 128)), fields(model_preset(family + "-1b")));
}

TEST_P(DepthFamilyTest, WidthAndHeadsFollowDepth) {
  const std::string family = GetParam();
  const ModelConfig c = depth_scaled_model(family, 8, 16, 257);
  EXPECT_EQ(c.d_model, 128);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.d_ff, 512);
  EXPECT_EQ(c.vocab, 257);
  EXPECT_EQ(c.n_layers(), 8);
  validate_model_config(c, "test");
}

INSTANTIATE_TEST_SUITE_P(Families, DepthFamilyTest,
                         ::testing::Values("sambay-da", "sambay", "samba-yoco", "transformerpp"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) ch = ch == '-' ? '_' : ch;
                           return n;
                         });

TEST(DepthFamily, RejectsDepthsThePatternCannotTake) {
  EXPECT_THROW(depth_scaled_model("sambay-da", 6), Error);
  EXPECT_THROW(depth_scaled_model("mamba", 8), Error);
  EXPECT_THROW(depth_scaled_model("sambay", 8, 0), Error);
}

// A fresh directory per test, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           fmt::format("sambay_test_sweep_{}_{}", ::getpid(),
                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string value_of(const PlannedRun& r, const std::string& key) {
  std::string v;
  for (const auto& [k, val] : r.config)
    if (k == key) v = val;
  return v;
}

int count_of(const PlannedRun& r, const std::string& key) {
  int n = 0;
  for (const auto& [k, val] : r.config) n += k == key;
  return n;
}

TEST(SweepPlan, DepthSweepDerivesModelsStepsAndMuP) {
  TempDir tmp;
  std::ofstream(tmp.path / "base.ini") << "data = base-data\nseq_len = 128\n[model]\nwindow = 64\n";
  const Ini spec = parse_ini(R"(
[sweep]
name = t
kind = depth
out_dir = out
base_config = base.ini
warmup_fraction = 0.1
[train]
data = a:0.5   # two sources replace the base's one
data = b:0.5
seq_len = 64
micro_batch = 4
lr = 3e-3
[depth]
family = sambay-da
depths = 4, 8
width_per_depth = 16
vocab = 257
mup_base_width = 64
tokens_per_param = 20
gpus = 2
[slurm]
gpus_per_node = 2
cpu = true
)", "spec.ini");
  const SweepPlan plan = plan_sweep(spec, (tmp.path / "spec.ini").string());
  ASSERT_EQ(plan.runs.size(), 2u);
  EXPECT_EQ(plan.out_dir, (tmp.path / "out").string());
  for (const PlannedRun& r : plan.runs) {
    const ModelConfig m = depth_scaled_model("sambay-da", r.depth, 16, 257);
    EXPECT_EQ(r.params, parameter_count(m));
    EXPECT_EQ(value_of(r, "model"), "sambay-da-1b");
    EXPECT_EQ(value_of(r, "model.d_model"), std::to_string(16 * r.depth));
    EXPECT_EQ(value_of(r, "model.mup_base_width"), "64");
    EXPECT_EQ(value_of(r, "model.window"), "512");  // the family's, over the base config's
    EXPECT_EQ(count_of(r, "data"), 2);
    EXPECT_EQ(value_of(r, "seq_len"), "64");
    EXPECT_EQ(r.dp, 2);
    EXPECT_EQ(r.group, "n1x2");
    // 20 tokens per parameter over batches of 4 sequences x 64 tokens x 2 ranks.
    EXPECT_EQ(r.steps, std::llround(20.0 * r.params / (4 * 64 * 2)));
    EXPECT_EQ(r.tokens, r.steps * 4 * 64 * 2);
    EXPECT_EQ(value_of(r, "warmup"), std::to_string(std::llround(0.1 * r.steps)));
    EXPECT_EQ(value_of(r, "out_dir"), (tmp.path / "out" / r.name).string());
  }
  EXPECT_EQ(plan.runs[0].name, "d4");
  EXPECT_LT(plan.runs[0].params, plan.runs[1].params);
}

constexpr const char* kScalingSpec = R"(
[sweep]
name = s
kind = {}
[train]
model = demo-sambay-da
micro_batch = 4
grad_accum = 2
seq_len = 128
[scaling]
gpus = 1 2 4 8 16 24
layouts = dp tp2 tp4cp2
global_batch = 32
steps = 10
tp_option = tensor_parallel
[slurm]
gpus_per_node = 8
)";

TEST(SweepPlan, StrongScalingKeepsTheGlobalBatch) {
  TempDir tmp;
  const SweepPlan plan =
      plan_sweep(parse_ini(fmt::format(fmt::runtime(kScalingSpec), "strong"), "s.ini"), (tmp.path / "s.ini").string());
  std::map<std::string, const PlannedRun*> by_name;
  for (const PlannedRun& r : plan.runs) {
    by_name[r.name] = &r;
    EXPECT_EQ(r.micro_batch * r.grad_accum * r.dp, 32) << r.name;
    EXPECT_LE(r.micro_batch, 4) << r.name;
    EXPECT_EQ(r.dp * r.layout.tp * r.layout.cp, r.ranks) << r.name;
  }
  ASSERT_TRUE(by_name.count("g16-tp2"));
  EXPECT_EQ(by_name["g16-tp2"]->nodes, 2);
  EXPECT_EQ(by_name["g16-tp2"]->group, "n2x8");
  EXPECT_EQ(value_of(*by_name["g16-tp2"], "tensor_parallel"), "2");
  EXPECT_EQ(value_of(*by_name["g16-tp4cp2"], "cp"), "2");
  EXPECT_EQ(value_of(*by_name["g8-dp"], "tensor_parallel"), "");
  // Left out, each with a reason: tp larger than the run, 24 GPUs do not fill 8-GPU nodes.
  EXPECT_FALSE(by_name.count("g1-tp2"));
  EXPECT_FALSE(by_name.count("g24-dp"));
  EXPECT_FALSE(plan.skipped.empty());
  for (const std::string& s : plan.skipped) EXPECT_NE(s.find(':'), std::string::npos) << s;
}

TEST(SweepPlan, WeakScalingKeepsTheReplicaBatch) {
  TempDir tmp;
  const SweepPlan plan =
      plan_sweep(parse_ini(fmt::format(fmt::runtime(kScalingSpec), "weak"), "s.ini"), (tmp.path / "s.ini").string());
  for (const PlannedRun& r : plan.runs) {
    EXPECT_EQ(r.micro_batch, 4);
    EXPECT_EQ(r.grad_accum, 2);
    EXPECT_EQ(r.tokens, 10 * 4 * 2 * 128 * r.dp);
  }
}

TEST(SweepPlan, WritesRunDirectoriesAndArraysAndRefusesToChangeARun) {
  TempDir tmp;
  const std::string spec = fmt::format(fmt::runtime(kScalingSpec), "weak");
  SweepPlan plan = plan_sweep(parse_ini(spec, "s.ini"), (tmp.path / "s.ini").string());
  const std::vector<std::string> runs_files = write_plan(plan);
  ASSERT_FALSE(runs_files.empty());
  size_t listed = 0;
  for (const std::string& f : runs_files) {
    std::ifstream in(f);
    for (std::string line; std::getline(in, line);) {
      ++listed;
      EXPECT_TRUE(fs::exists(fs::path(line) / "train.ini")) << line;
      EXPECT_TRUE(fs::exists(fs::path(line) / "sweep.ini")) << line;
    }
    const std::vector<std::string> cmd = submit_command(plan, f, "submit.sh", "/x/sambay", true);
    EXPECT_EQ(cmd.back(), "@" + f);
    EXPECT_NE(std::find(cmd.begin(), cmd.end(), "--gpus-per-node"), cmd.end());
    EXPECT_NE(std::find(cmd.begin(), cmd.end(), "--dry-run"), cmd.end());
  }
  EXPECT_EQ(listed, plan.runs.size());
  EXPECT_NO_THROW(write_plan(plan));  // the same plan again: nothing changes
  plan.runs[0].config.emplace_back("lr", "1");
  EXPECT_THROW(write_plan(plan), Error);
}

TEST(SweepPlan, RejectsBadSpecs) {
  TempDir tmp;
  const std::string p = (tmp.path / "s.ini").string();
  EXPECT_THROW(plan_sweep(parse_ini("[sweep]\nname = x\nkind = sideways\n", "s"), p), Error);
  EXPECT_THROW(plan_sweep(parse_ini("[sweep]\nname = x\nkind = depth\n[depth]\ndepths = 4\n", "s"), p),
               Error);  // neither tokens nor tokens_per_param
  EXPECT_THROW(plan_sweep(parse_ini("[sweep]\nname = x\nkind = strong\n[scaling]\ngpus = 2\n", "s"), p),
               Error);  // no global batch
  EXPECT_THROW(parse_layout("tp"), Error);
  EXPECT_EQ(parse_layout("tp2cp4").cp, 4);
}

TEST(Ini, SectionsCommentsAndErrors) {
  const Ini ini = parse_ini("a = 1 # one\n; note\n[s]\nb = x y\nb = z\n", "f.ini");
  EXPECT_EQ(ini.get("a"), "1");
  EXPECT_EQ(ini.get("s.b"), "z");
  EXPECT_EQ(ini.all("s.b"), (std::vector<std::string>{"x y", "z"}));
  EXPECT_EQ(ini.section("s").size(), 2u);
  EXPECT_EQ(split_list("4, 8,12 16"), (std::vector<std::string>{"4", "8", "12", "16"}));
  EXPECT_THROW(parse_ini("[open\n", "f"), Error);
  EXPECT_THROW(parse_ini("novalue\n", "f"), Error);
  EXPECT_THROW(ini.get_int("s.b", 0), Error);
  EXPECT_THROW(ini.require("missing"), Error);
}

TEST(Collect, ReadsConfigMetricsAndSweepInfo) {
  TempDir tmp;
  const fs::path run = tmp.path / "d8";
  fs::create_directories(run);
  std::ofstream(run / "config.ini") << "model = demo-sambay-da\nmodel.d_model = 64\nseq_len = 32\nsteps = 3\n";
  std::ofstream(run / "sweep.ini") << "run = d8\nkind = depth\ngpus = 2\nnodes = 1\nlayout = dp\ndp = 2\n";
  std::ofstream(run / "metrics.jsonl")
      << R"({"step":0,"valid_loss":5.5})" "\n"
      << R"({"step":1,"loss":5.25,"lr":0.001,"grad_norm":1,"tokens":256,"tokens_per_s":10,"step_ms":1,"elapsed_s":1})" "\n"
      << R"({"step":2,"loss":4.5,"lr":0.001,"grad_norm":1,"tokens":512,"tokens_per_s":1000,"step_ms":1,"elapsed_s":1})" "\n"
      << R"({"step":3,"loss":4.25,"lr":0.001,"grad_norm":1,"tokens":768,"tokens_per_s":3000,"step_ms":1,"elapsed_s":1})" "\n"
      << R"({"step":3,"valid_loss":4.375})" "\n";
  const RunResult r = collect_run(run.string());
  ModelConfig m = model_preset("demo-sambay-da");
  m.d_model = 64;
  EXPECT_EQ(r.run, "d8");
  EXPECT_EQ(r.kind, "depth");
  EXPECT_EQ(r.params, parameter_count(m));
  EXPECT_EQ(r.non_embedding_params, parameter_count(m) - 257 * 64);
  EXPECT_EQ(r.gpus, 2);
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_EQ(r.status, "finished");
  EXPECT_EQ(r.tokens, 768);
  EXPECT_EQ(r.final_loss, 4.25);
  EXPECT_EQ(r.final_valid_loss, 4.375);
  EXPECT_EQ(r.tokens_per_s, 2000);  // median of steps 2 and 3: the first step is start-up
  EXPECT_DOUBLE_EQ(r.flops, training_flops_per_token(m, 32) * 768);

  std::ofstream(tmp.path / "empty" / "x");  // not a run
  fs::create_directories(tmp.path / "empty");
  const std::vector<RunResult> rows = collect_runs(tmp.path.string());
  ASSERT_EQ(rows.size(), 1u);
  std::ostringstream csv;
  write_results_csv(rows, csv);
  std::ofstream(tmp.path / "r.csv") << csv.str();
  auto cols = read_csv_columns((tmp.path / "r.csv").string());
  EXPECT_EQ(cols["final_valid_loss"], std::vector<std::string>{"4.375"});
  EXPECT_EQ(cols["tokens_per_s_per_gpu"], std::vector<std::string>{"1000"});
  EXPECT_EQ(std::stod(cols["flops"][0]), r.flops);
}

TEST(Collect, RecordsByKindNullsAndATornLastLine) {
  TempDir tmp;
  const fs::path run = tmp.path / "r";
  fs::create_directories(run);
  std::ofstream(run / "config.ini") << "model = demo-sambay-da\nseq_len = 32\nsteps = 4\n";
  std::ofstream(run / "metrics.jsonl")
      << R"({"kind":"run_start","step":0,"wall_time":1.5,"config":{"steps":4}})" "\n"
      << R"({"kind":"valid","step":0,"valid_loss":5.5})" "\n"
      << R"({"kind":"step","step":1,"loss":5.25,"tokens":256,"tokens_per_s":10})" "\n"
      << R"({"kind":"step","step":2,"loss":4.5,"tokens":512,"tokens_per_s":30})" "\n"
      << R"({"kind":"checkpoint","step":2,"dir":"x"})" "\n"
      << R"({"kind":"valid","step":2,"valid_loss":null})" "\n"
      << R"({"kind":"step","step":3,"lo)";
  const RunResult r = collect_run(run.string());
  EXPECT_EQ(r.steps_done, 2);
  EXPECT_EQ(r.status, "partial");
  EXPECT_EQ(r.final_loss, 4.5);
  EXPECT_TRUE(std::isnan(r.final_valid_loss));  // the last validation was NaN
  EXPECT_EQ(r.tokens_per_s, 30);
}

}  // namespace
}  // namespace sambay::sweep
