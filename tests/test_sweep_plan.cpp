#include "core/check.h"
#include "core/model.h"
#include "core/model_config.h"
#include "tools/sweep/budget.h"
#include "tools/sweep/collect.h"
#include "tools/sweep/depth_family.h"
#include "core/config_file.h"
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
  const ConfigFile spec = parse_config_text(R"(
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
mup_base_depth = 4
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
    EXPECT_EQ(value_of(r, "model.mup_base_depth"), "4");
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
      plan_sweep(parse_config_text(fmt::format(fmt::runtime(kScalingSpec), "strong"), "s.ini"), (tmp.path / "s.ini").string());
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
      plan_sweep(parse_config_text(fmt::format(fmt::runtime(kScalingSpec), "weak"), "s.ini"), (tmp.path / "s.ini").string());
  for (const PlannedRun& r : plan.runs) {
    EXPECT_EQ(r.micro_batch, 4);
    EXPECT_EQ(r.grad_accum, 2);
    EXPECT_EQ(r.tokens, 10 * 4 * 2 * 128 * r.dp);
  }
}

TEST(SweepPlan, WritesRunDirectoriesAndArraysAndRefusesToChangeARun) {
  TempDir tmp;
  const std::string spec = fmt::format(fmt::runtime(kScalingSpec), "weak");
  SweepPlan plan = plan_sweep(parse_config_text(spec, "s.ini"), (tmp.path / "s.ini").string());
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

// ArchScale's N(D) multipliers (pretrain.py): Transformer++ 14.5 ar^2 = 237568 at ar 128 (the
// base n0_mult), SambaY and SambaY+DA 14.5 ar^2 + 144 ar, Samba+YOCO 13.5 ar^2 + 208 ar.
TEST(Budget, ArchScaleParameterMultipliers) {
  EXPECT_EQ(archscale_param_multiplier("transformerpp", 128), 237568);
  EXPECT_EQ(archscale_param_multiplier("sambay", 124), 14.5 * 124 * 124 + 144 * 124);
  EXPECT_EQ(archscale_param_multiplier("sambay-da", 124), 240808);
  EXPECT_EQ(archscale_param_multiplier("samba-yoco", 126), 13.5 * 126 * 126 + 208 * 126);
  EXPECT_THROW(archscale_param_multiplier("mamba", 128), Error);
}

constexpr const char* kArchScaleSpec = R"(
[sweep]
name = a
kind = depth
[train]
data = corpus
seq_len = 4096
micro_batch = 2
[depth]
family = archscale-{}
depths = 8 12 16 20 24
gpus = {}
[budget]
rule = archscale
[slurm]
gpus_per_node = 8
)";

// The paper's budget rules by hand (pretrain.py setup, base d0 = 16, eta0 = 4e-4, b0 = 2^21,
// t0 = 1e11, n0 = 237568 d0^3, warmup 1e9 tokens): tokens = floor(t0 N(D) / n0); on 8 GPUs with
// micro-batches of 2 x 4096 the batch is b0 exactly (32 accumulation steps), lr = eta0;
// steps = floor(floor(tokens / 8) / 8192) / 32; warmup = floor(floor(1e9 / 8) / 8192) / 32 = 476;
// linear decay to 0; the model is core's archscale preset of that depth.
TEST(SweepPlan, ArchScaleBudgetRulesByHand) {
  TempDir tmp;
  for (const char* family : {"sambay", "sambay-da", "samba-yoco", "transformerpp"}) {
    const SweepPlan plan =
        plan_sweep(parse_config_text(fmt::format(fmt::runtime(kArchScaleSpec), family, 8), "a.ini"),
                   (tmp.path / "a.ini").string());
    ASSERT_EQ(plan.runs.size(), 5u);
    const std::string f = family;
    const double ar = f == "transformerpp" ? 128 : f == "samba-yoco" ? 126 : 124;
    const double mult = f == "transformerpp" ? 14.5 * ar * ar
                        : f == "samba-yoco"  ? 13.5 * ar * ar + 208 * ar
                                             : 14.5 * ar * ar + 144 * ar;
    for (const PlannedRun& r : plan.runs) {
      const double D = double(r.depth);
      const double N = mult * D * D * D;
      const int64_t tokens = int64_t(std::floor(1e11 * N / (237568.0 * 16 * 16 * 16)));
      const int64_t steps = tokens / 8 / 8192 / 32;
      EXPECT_EQ(r.budget_params, N) << family << r.name;
      EXPECT_EQ(r.steps, steps) << family << r.name;
      EXPECT_EQ(r.tokens, steps * (int64_t(1) << 21)) << family << r.name;
      EXPECT_EQ(r.micro_batch, 2);
      EXPECT_EQ(r.grad_accum, 32);
      EXPECT_EQ(value_of(r, "lr"), "0.0004");
      EXPECT_EQ(value_of(r, "warmup"), "476");
      EXPECT_EQ(value_of(r, "schedule"), "linear");
      EXPECT_EQ(value_of(r, "min_lr_ratio"), "0");
      EXPECT_EQ(value_of(r, "weight_decay"), "0.1");
      EXPECT_EQ(value_of(r, "beta1"), "0.9");
      EXPECT_EQ(value_of(r, "beta2"), "0.95");
      EXPECT_EQ(value_of(r, "adam_eps"), "1e-08");
      EXPECT_EQ(value_of(r, "clip"), "1");
      EXPECT_EQ(value_of(r, "model"), fmt::format("archscale-{}-d16", family));
      const ModelConfig want = model_preset(fmt::format("archscale-{}-d{}", family, r.depth));
      for (const auto& [key, value] : model_config_fields(want))
        EXPECT_EQ(value_of(r, "model." + key), value) << family << r.name << " model." << key;
      EXPECT_EQ(r.params, parameter_count(want));
    }
    // About 100 tokens per non-embedding parameter at every depth (t0 / n0 = 102.8).
    EXPECT_NEAR(plan.runs[2].tokens / plan.runs[2].budget_params, 102.8, 1.5);
  }
}

// 24 GPUs (3 nodes): b = floor(b0 / (24 x 2 x 4096)) x that = 10 x 196608 tokens, 10
// accumulation steps, lr = eta0 sqrt(b / b0); one GPU count per depth; a tied head.
TEST(SweepPlan, ArchScaleBatchRoundsDownAndGpusPerDepth) {
  TempDir tmp;
  std::string spec = fmt::format(fmt::runtime(kArchScaleSpec), "sambay", "8 8 16 24 64");
  spec.replace(spec.find("[budget]"), 8, "tied = true\n[budget]");
  const SweepPlan plan = plan_sweep(parse_config_text(spec, "a.ini"), (tmp.path / "a.ini").string());
  ASSERT_EQ(plan.runs.size(), 5u);
  const PlannedRun& r = plan.runs[3];
  EXPECT_EQ(r.ranks, 24);
  EXPECT_EQ(r.nodes, 3);
  EXPECT_EQ(r.grad_accum, 10);
  EXPECT_NEAR(r.lr, 4e-4 * std::sqrt(1966080.0 / 2097152.0), 1e-18);
  EXPECT_EQ(value_of(r, "model.tied_embedding"), "true");
  EXPECT_EQ(value_of(r, "model"), "archscale-sambay-d16-tied");
  EXPECT_EQ(plan.runs[4].grad_accum, 4);
  EXPECT_EQ(plan.runs[4].group, "n8x8");
}

TEST(SweepPlan, ArchScaleBudgetConflictsAreNamed) {
  TempDir tmp;
  const std::string p = (tmp.path / "a.ini").string();
  const std::string base = fmt::format(fmt::runtime(kArchScaleSpec), "sambay", 8);
  auto with = [&](const std::string& section, const std::string& line) {
    std::string s = base;
    s.insert(s.find("[" + section + "]") + section.size() + 3, line + "\n");
    return s;
  };
  auto error_of = [&](const std::string& spec) {
    try {
      plan_sweep(parse_config_text(spec, "a.ini"), p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(with("train", "lr = 1e-3")).find("[train] lr"), std::string::npos);
  EXPECT_NE(error_of(with("train", "schedule = wsd")).find("[train] schedule"), std::string::npos);
  EXPECT_NE(error_of(with("depth", "tokens_per_param = 20")).find("depth.tokens_per_param"),
            std::string::npos);
  EXPECT_NE(error_of(with("depth", "mup_base_width = 1024")).find("depth.mup_base_width"),
            std::string::npos);
  EXPECT_NE(error_of(with("budget", "b0 = 1000")).find("less than one micro-batch"),
            std::string::npos);
  std::string rule = base;
  rule.replace(rule.find("rule = archscale"), 16, "rule = chinchilla");
  EXPECT_NE(error_of(rule).find("budget.rule = 'chinchilla'"), std::string::npos);
  std::string phi = base;
  phi.replace(phi.find("archscale-sambay"), 16, "sambay");
  EXPECT_NE(error_of(phi).find("[budget]"), std::string::npos);
  std::string gpus = base;
  gpus.replace(gpus.find("gpus = 8"), 8, "gpus = 8 16");
  EXPECT_NE(error_of(gpus).find("depth.gpus"), std::string::npos);
}

// [estimate]: the performance model's step from a measured MFU: compute (exact FLOPs / (MFU x
// peak)) plus the optimizer shard and whatever communication does not hide.
TEST(SweepPlan, ArchScaleEstimateFromTheMeasuredProfile) {
  TempDir tmp;
  const std::string spec = fmt::format(fmt::runtime(kArchScaleSpec), "sambay", 8) +
                           "[estimate]\nmfu = 0.34\noptimizer_seconds_per_param = 1.4e-11\n";
  const SweepPlan plan = plan_sweep(parse_config_text(spec, "a.ini"), (tmp.path / "a.ini").string());
  for (const PlannedRun& r : plan.runs) {
    const ModelConfig m = model_preset(fmt::format("archscale-sambay-d{}", r.depth));
    const double compute =
        double(int64_t(1) << 21) / 8 * training_flops_per_token(m, 4096) / (0.34 * 989.4e12);
    EXPECT_GE(r.est_step_seconds, compute) << r.name;
    EXPECT_LE(r.est_step_seconds, 1.05 * compute) << r.name;
    EXPECT_GT(r.est_memory_bytes, 0) << r.name;
  }
}

// Every sweep config in the repository plans (the trainer's parser checks each run in `plan`).
TEST(SweepPlan, RepositoryConfigsPlan) {
  for (const auto& e : fs::directory_iterator(fs::path(SAMBAY_SOURCE_DIR) / "configs/sweeps")) {
    const std::string path = e.path().string();
    const SweepPlan plan = plan_sweep(read_config_file(path), path);
    EXPECT_FALSE(plan.runs.empty()) << path;
  }
}

TEST(SweepPlan, RejectsBadSpecs) {
  TempDir tmp;
  const std::string p = (tmp.path / "s.ini").string();
  EXPECT_THROW(plan_sweep(parse_config_text("[sweep]\nname = x\nkind = sideways\n", "s"), p), Error);
  EXPECT_THROW(plan_sweep(parse_config_text("[sweep]\nname = x\nkind = depth\n[depth]\ndepths = 4\n", "s"), p),
               Error);  // neither tokens nor tokens_per_param
  EXPECT_THROW(plan_sweep(parse_config_text("[sweep]\nname = x\nkind = strong\n[scaling]\ngpus = 2\n", "s"), p),
               Error);  // no global batch
  // μP++'s depth rule without μP++ is refused, naming the field.
  try {
    plan_sweep(parse_config_text("[sweep]\nname = x\nkind = depth\n[depth]\ndepths = 4\ntokens = 1000\n"
                         "mup_base_depth = 4\n", "s"), p);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.mup_base_depth"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_layout("tp"), Error);
  EXPECT_EQ(parse_layout("tp2cp4").cp, 4);
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
  // ArchScale's conventions: estimate_flops 3 (2 N_all + 4 layers d L) per token, and 6 N T with
  // the non-embedding count (no budget N in this run's sweep.ini).
  EXPECT_DOUBLE_EQ(r.flops_archscale_estimate,
                   3.0 * (2.0 * double(parameter_count(m)) + 4.0 * 8 * 64 * 32) * 768);
  EXPECT_DOUBLE_EQ(r.flops_6nt, 6.0 * double(parameter_count(m) - 257 * 64) * 768);

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
  EXPECT_EQ(std::stod(cols["flops_archscale_estimate"][0]), r.flops_archscale_estimate);
  EXPECT_EQ(std::stod(cols["flops_6nt"][0]), r.flops_6nt);

  // A [budget] run records ArchScale's N(D): 6 N T uses it.
  std::ofstream(run / "sweep.ini", std::ios::app) << "budget_params = 1000\n";
  EXPECT_DOUBLE_EQ(collect_run(run.string()).flops_6nt, 6.0 * 1000 * 768);
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
