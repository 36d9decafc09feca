#include "tools/sweep/sweep_plan.h"

#include "core/check.h"
#include "core/model_config.h"
#include "launch/train_config.h"
#include "core/model.h"
#include "tools/sweep/budget.h"
#include "tools/sweep/depth_family.h"
#include "tools/sweep/perf_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

namespace sambay::sweep {

namespace fs = std::filesystem;

std::string Layout::name() const {
  if (tp == 1 && cp == 1) return "dp";
  return (tp > 1 ? fmt::format("tp{}", tp) : "") + (cp > 1 ? fmt::format("cp{}", cp) : "");
}

Layout parse_layout(const std::string& s) {
  static const std::regex re("dp|(tp([0-9]+))?(cp([0-9]+))?");
  std::smatch m;
  if (s.empty() || !std::regex_match(s, m, re))
    fail("layout '{}' is not dp, tpN, cpN or tpNcpM", s);
  Layout l;
  if (m[2].matched) l.tp = std::stoll(m[2]);
  if (m[4].matched) l.cp = std::stoll(m[4]);
  if (l.tp < 1 || l.cp < 1) fail("layout '{}': degrees must be >= 1", s);
  return l;
}

namespace {

// train.ini lines with "later layers win": a key set again replaces its earlier value; a key
// given several times in one layer (data) replaces all earlier values together.
class ConfigLines {
 public:
  void set(const std::string& key, const std::string& value) { set_all(key, {value}); }
  void set_all(const std::string& key, const std::vector<std::string>& values) {
    auto first = std::find_if(lines_.begin(), lines_.end(), [&](auto& l) { return l.first == key; });
    const size_t at = first - lines_.begin();
    std::erase_if(lines_, [&](auto& l) { return l.first == key; });
    std::vector<std::pair<std::string, std::string>> add;
    for (const std::string& v : values) add.emplace_back(key, v);
    lines_.insert(lines_.begin() + std::min(at, lines_.size()), add.begin(), add.end());
  }
  void set_layer(const std::vector<ConfigEntry>& entries) {
    std::map<std::string, std::vector<std::string>> by_key;
    std::vector<std::string> order;
    for (const ConfigEntry& e : entries) {
      if (!by_key.count(e.key)) order.push_back(e.key);
      by_key[e.key].push_back(e.value);
    }
    for (const std::string& k : order) set_all(k, by_key[k]);
  }
  std::string get(const std::string& key, const std::string& fallback) const {
    for (const auto& [k, v] : lines_)
      if (k == key) return v;
    return fallback;
  }
  int64_t get_int(const std::string& key, int64_t fallback) const {
    const std::string v = get(key, "");
    if (v.empty()) return fallback;
    try {
      return std::stoll(v);
    } catch (const std::exception&) {
      fail("option {} = '{}' is not an integer", key, v);
    }
  }
  const auto& lines() const { return lines_; }

 private:
  std::vector<std::pair<std::string, std::string>> lines_;
};

std::vector<int64_t> int_list(const ConfigFile& spec, const std::string& key) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(spec.require(key))) {
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || v <= 0) fail("{}: {}: '{}' is not a positive integer", spec.source, key, item);
    out.push_back(v);
  }
  if (out.empty()) fail("{}: {} lists nothing", spec.source, key);
  return out;
}

// Largest divisor of n that is <= cap (micro-batches must split a rank's batch evenly).
int64_t largest_divisor_at_most(int64_t n, int64_t cap) {
  for (int64_t d = std::min(n, cap); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

struct Shape {
  int64_t nodes, per_node;
};

// Ranks spread over full nodes of `per_node`, or one partly used node.
bool node_shape(int64_t ranks, int64_t per_node, Shape& out, std::string& why) {
  if (ranks <= per_node) {
    out = {1, ranks};
    return true;
  }
  if (ranks % per_node != 0) {
    why = fmt::format("{} ranks do not fill nodes of {}", ranks, per_node);
    return false;
  }
  out = {ranks / per_node, per_node};
  return true;
}

// [estimate]: the performance model's step time for the run (data parallel over its ranks, a
// ZeRO-1 sharded optimizer) from a measured MFU of sambay's exact FLOPs count.
void estimate_run(const ConfigFile& spec, const SlurmOptions& so, const ModelConfig& m, int64_t seq_len,
                  PlannedRun& r) {
  const double mfu = spec.get_double("estimate.mfu", 0);
  const double peak = spec.get_double("estimate.peak_flops", 989.4e12);
  if (!(mfu > 0 && mfu <= 1)) fail("{}: estimate.mfu must be in (0, 1], got {}", spec.source, mfu);
  const bool recompute = spec.get_bool("estimate.recompute", false);
  StepProfile prof;
  prof.seconds_per_token = training_flops_per_token(m, seq_len) / (mfu * peak);
  prof.optimizer_seconds = double(r.params) * spec.get_double("estimate.optimizer_seconds_per_param", 0);
  prof.params = double(r.params);
  prof.d_model = m.d_model;
  prof.n_layers = m.n_layers();
  prof.activation_bytes_per_micro_batch =
      double(activation_bytes(m, r.micro_batch, seq_len, recompute, 2));
  ClusterSpec cl = cluster_spec_from(spec, "estimate");
  cl.gpus_per_node = so.gpus_per_node;
  ParallelConfig pc;
  pc.gpus = r.ranks;
  pc.tokens_per_replica = double(r.micro_batch * r.grad_accum * seq_len);
  pc.micro_batch_tokens = double(r.micro_batch * seq_len);
  pc.grad_bytes = spec.get_double("estimate.grad_bytes", 4);
  pc.param_bytes = spec.get_double("estimate.param_bytes", 2);
  const StepPrediction p = predict_step(prof, cl, pc);
  r.est_step_seconds = p.step;
  r.est_memory_bytes = p.memory_bytes;
  r.gpu_memory = cl.gpu_memory;
}

}  // namespace

SweepPlan plan_sweep(const ConfigFile& spec, const std::string& spec_path) {
  const fs::path spec_dir = fs::absolute(spec_path).parent_path();
  auto path_from_spec = [&](const std::string& p) {
    return fs::path(p).is_absolute() ? fs::path(p) : (spec_dir / p).lexically_normal();
  };
  SweepPlan plan;
  plan.name = spec.require("sweep.name");
  plan.kind = spec.require("sweep.kind");
  if (plan.kind != "depth" && plan.kind != "strong" && plan.kind != "weak")
    fail("{}: sweep.kind = '{}' is not depth, strong or weak", spec.source, plan.kind);
  plan.out_dir = path_from_spec(spec.get("sweep.out_dir", "runs/sweeps/" + plan.name)).string();

  SlurmOptions& so = plan.slurm;
  so.gpus_per_node = spec.get_int("slurm.gpus_per_node", 8);
  so.cpu = spec.get_bool("slurm.cpu", false);
  so.cpus_per_task = spec.get_int("slurm.cpus_per_task", 0);
  so.time = spec.get("slurm.time");
  so.partition = spec.get("slurm.partition");
  so.account = spec.get("slurm.account");
  so.qos = spec.get("slurm.qos");
  so.max_parallel = spec.get_int("slurm.max_parallel", 0);
  SAMBAY_CHECK(so.gpus_per_node > 0, "slurm.gpus_per_node must be positive, got {}", so.gpus_per_node);

  // The configuration every run starts from.
  ConfigLines common;
  if (spec.has("sweep.base_config")) {
    const std::string base = path_from_spec(spec.get("sweep.base_config")).string();
    common.set_layer(read_config_file(base).entries);
  }
  common.set_layer(spec.section("train"));
  const TrainConfig defaults;
  const int64_t seq_len = common.get_int("seq_len", defaults.seq_len);
  const int64_t micro = common.get_int("micro_batch", defaults.micro_batch);
  const int64_t accum = common.get_int("grad_accum", defaults.grad_accum);
  const double warmup_fraction = spec.get_double("sweep.warmup_fraction", -1);

  auto finish = [&](PlannedRun r, ConfigLines cfg) {
    r.dir = (fs::path(plan.out_dir) / r.name).string();
    r.seq_len = seq_len;
    r.tokens = r.steps * r.micro_batch * r.grad_accum * r.dp * seq_len;
    cfg.set("micro_batch", std::to_string(r.micro_batch));
    cfg.set("grad_accum", std::to_string(r.grad_accum));
    cfg.set("steps", std::to_string(r.steps));
    if (warmup_fraction >= 0)
      cfg.set("warmup", std::to_string(std::llround(warmup_fraction * r.steps)));
    cfg.set("out_dir", r.dir);
    r.config = cfg.lines();
    plan.runs.push_back(std::move(r));
  };

  if (plan.kind == "depth") {
    const std::string family = spec.get("depth.family", "sambay-da");
    const bool archscale = is_archscale_family(family);
    const bool budget = spec.has("budget.rule") || !spec.section("budget").empty();
    if (budget && !archscale)
      fail("{}: [budget] applies ArchScale's rules to its own families: depth.family = '{}' is "
           "not archscale-<family>",
           spec.source, family);
    const ArchScaleBase base = archscale_base_from(spec);
    const std::vector<int64_t> depths = int_list(spec, "depth.depths");
    std::vector<int64_t> gpus = {1};
    if (spec.has("depth.gpus")) gpus = int_list(spec, "depth.gpus");
    if (gpus.size() != 1 && gpus.size() != depths.size())
      fail("{}: depth.gpus lists {} values for {} depths (give one, or one per depth)",
           spec.source, gpus.size(), depths.size());
    const double tokens_per_param = spec.get_double("depth.tokens_per_param", 0);
    const double fixed_tokens = spec.get_double("depth.tokens", 0);
    if (budget) {
      if (tokens_per_param > 0 || fixed_tokens > 0)
        fail("{}: the [budget] rule sets every run's tokens: remove depth.tokens_per_param and "
             "depth.tokens",
             spec.source);
      // The keys the rule derives: a [train] (or base config) value would be overridden.
      for (const char* key : {"lr", "steps", "grad_accum", "warmup", "schedule", "min_lr_ratio",
                              "weight_decay", "beta1", "beta2", "adam_eps", "clip"})
        if (!common.get(key, "").empty())
          fail("{}: [train] {} (or the base config's) conflicts with the [budget] rule, which "
               "derives it for every run",
               spec.source, key);
    } else if ((tokens_per_param > 0) == (fixed_tokens > 0)) {
      fail("{}: give exactly one of depth.tokens_per_param and depth.tokens{}", spec.source,
           archscale ? " (or a [budget] section)" : "");
    }
    if (warmup_fraction >= 0 && budget)
      fail("{}: sweep.warmup_fraction conflicts with the [budget] rule's warmup_tokens",
           spec.source);
    const bool estimate = !spec.section("estimate").empty();
    for (size_t i = 0; i < depths.size(); ++i) {
      const int64_t depth = depths[i];
      const int64_t ranks = gpus.size() == 1 ? gpus[0] : gpus[i];
      Shape shape;
      std::string why;
      if (!node_shape(ranks, so.gpus_per_node, shape, why))
        fail("{}: depth.gpus for depth {}: {}", spec.source, depth, why);
      PlannedRun r;
      ModelConfig m;
      std::string preset;
      if (archscale) {
        if (spec.has("depth.mup_base_width"))
          fail("{}: depth.mup_base_width: an archscale family's μP++ base width is its aspect "
               "ratio times budget.d0",
               spec.source);
        m = depth_archscale_model(family, depth, spec, base);
        preset = archscale_family_preset(family, m.tied_embedding);
      } else {
        m = depth_scaled_model(family, depth, spec.get_int("depth.width_per_depth", 128),
                               spec.get_int("depth.vocab", 0));
        m.mup_base_width = spec.get_int("depth.mup_base_width", 0);
        m.mup_base_depth = spec.get_int("depth.mup_base_depth", 0);
        m.mup_base_head_dim = spec.get_int("depth.mup_base_head_dim", 0);
        validate_model_config(m, spec.source + ": [depth]");
        preset = depth_family_preset(family);
      }
      r.name = fmt::format("d{}", depth);
      r.depth = depth;
      r.ranks = ranks, r.nodes = shape.nodes, r.ranks_per_node = shape.per_node;
      r.group = fmt::format("n{}x{}", shape.nodes, shape.per_node);
      r.dp = ranks;
      r.params = parameter_count(m);
      ConfigLines cfg = common;
      if (budget) {
        const ArchScaleRun b = archscale_budget(base, archscale_core_family(family),
                                                m.d_model / depth, depth, ranks, micro, seq_len);
        r.micro_batch = micro, r.grad_accum = b.grad_accum, r.steps = b.steps;
        r.lr = b.lr, r.budget_params = b.budget_params;
        cfg.set("lr", fmt::format("{}", b.lr));
        cfg.set("warmup", std::to_string(b.warmup_steps));
        cfg.set("schedule", "linear");
        cfg.set("min_lr_ratio", fmt::format("{}", base.min_lr_ratio));
        cfg.set("weight_decay", fmt::format("{}", base.weight_decay));
        cfg.set("beta1", fmt::format("{}", base.beta1));
        cfg.set("beta2", fmt::format("{}", base.beta2));
        cfg.set("adam_eps", fmt::format("{}", base.adam_eps));
        cfg.set("clip", fmt::format("{}", base.clip));
      } else {
        r.micro_batch = micro, r.grad_accum = accum;
        const double tokens = fixed_tokens > 0 ? fixed_tokens : tokens_per_param * r.params;
        const double per_step = double(micro) * accum * ranks * seq_len;
        r.steps = std::max<int64_t>(1, std::llround(tokens / per_step));
      }
      cfg.set("model", preset);
      for (const auto& [key, value] : model_config_fields(m)) cfg.set("model." + key, value);
      if (estimate) estimate_run(spec, so, m, seq_len, r);
      finish(std::move(r), std::move(cfg));
    }
    return plan;
  }

  // Scaling studies: every (ranks, layout) that fits.
  const std::string tp_option = spec.get("scaling.tp_option", "tp");
  const std::string cp_option = spec.get("scaling.cp_option", "cp");
  const int64_t steps = spec.get_int("scaling.steps", common.get_int("steps", defaults.steps));
  const int64_t global_batch = spec.get_int("scaling.global_batch", 0);
  if (plan.kind == "strong" && global_batch <= 0)
    fail("{}: a strong-scaling study needs scaling.global_batch (sequences per step)", spec.source);
  std::vector<Layout> layouts;
  for (const std::string& s : split_list(spec.get("scaling.layouts", "dp"))) layouts.push_back(parse_layout(s));
  const std::string model = common.get("model", defaults.model_preset);
  ModelConfig mc = model_preset(model);
  for (const auto& [key, value] : common.lines())
    if (key.rfind("model.", 0) == 0) set_model_config_field(mc, key.substr(6), value, spec.source);

  for (int64_t ranks : int_list(spec, "scaling.gpus")) {
    for (const Layout& l : layouts) {
      const std::string name = fmt::format("g{}-{}", ranks, l.name());
      Shape shape;
      std::string why;
      auto skip = [&](const std::string& reason) { plan.skipped.push_back(name + ": " + reason); };
      if (ranks % (l.tp * l.cp) != 0) {
        skip(fmt::format("tp {} x cp {} does not divide {} ranks", l.tp, l.cp, ranks));
        continue;
      }
      if (!node_shape(ranks, so.gpus_per_node, shape, why)) {
        skip(why);
        continue;
      }
      if (l.tp > shape.per_node) {
        skip(fmt::format("tp {} spans nodes (tensor parallel stays within a node of {})", l.tp,
                         shape.per_node));
        continue;
      }
      PlannedRun r;
      r.name = name;
      r.ranks = ranks, r.nodes = shape.nodes, r.ranks_per_node = shape.per_node;
      r.group = fmt::format("n{}x{}", shape.nodes, shape.per_node);
      r.layout = l;
      r.dp = ranks / (l.tp * l.cp);
      r.depth = mc.n_layers();
      r.params = parameter_count(mc);
      r.steps = steps;
      if (plan.kind == "strong") {
        if (global_batch % r.dp != 0) {
          skip(fmt::format("global batch {} does not split over dp {}", global_batch, r.dp));
          continue;
        }
        const int64_t per_rank = global_batch / r.dp;
        r.micro_batch = largest_divisor_at_most(per_rank, micro);
        r.grad_accum = per_rank / r.micro_batch;
      } else {
        r.micro_batch = micro, r.grad_accum = accum;
      }
      ConfigLines cfg = common;
      if (l.tp > 1) cfg.set(tp_option, std::to_string(l.tp));
      if (l.cp > 1) cfg.set(cp_option, std::to_string(l.cp));
      finish(std::move(r), std::move(cfg));
    }
  }
  if (plan.runs.empty()) fail("{}: no run fits (skipped: {})", spec.source, fmt::join(plan.skipped, "; "));
  return plan;
}

std::string config_text(const PlannedRun& run) {
  std::string s = fmt::format("# sambay_sweep: run {} of a sweep (see sweep.ini beside this file)\n", run.name);
  for (const auto& [k, v] : run.config) s += fmt::format("{} = {}\n", k, v);
  return s;
}

std::vector<std::string> write_plan(const SweepPlan& plan) {
  std::map<std::string, std::vector<std::string>> groups;
  for (const PlannedRun& r : plan.runs) {
    fs::create_directories(r.dir);
    const fs::path ini = fs::path(r.dir) / "train.ini";
    const std::string text = config_text(r);
    if (fs::exists(ini)) {
      std::ifstream in(ini);
      const std::string old((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (old != text)
        fail("{} exists with another config: a run directory holds one run (remove it or change "
             "sweep.out_dir)", ini.string());
    } else {
      std::ofstream(ini) << text;
    }
    std::ofstream meta(fs::path(r.dir) / "sweep.ini");
    meta << fmt::format(
        "# written by sambay_sweep plan\nsweep = {}\nkind = {}\nrun = {}\ndepth = {}\ngpus = {}\n"
        "nodes = {}\ngpus_per_node = {}\nlayout = {}\ntp = {}\ncp = {}\ndp = {}\ncpu = {}\n",
        plan.name, plan.kind, r.name, r.depth, r.ranks, r.nodes, r.ranks_per_node, r.layout.name(),
        r.layout.tp, r.layout.cp, r.dp, plan.slurm.cpu);
    // ArchScale's N(D) of the budget rule: the collector's 6 N T uses it.
    if (r.budget_params > 0) meta << fmt::format("budget_params = {}\n", r.budget_params);
    groups[r.group].push_back(r.dir);
  }
  std::vector<std::string> files;
  for (const auto& [group, dirs] : groups) {
    const fs::path dir = fs::path(plan.out_dir) / ("array-" + group);
    fs::create_directories(dir);
    const fs::path runs = dir / "runs.txt";
    std::ofstream out(runs);
    for (const std::string& d : dirs) out << d << '\n';
    files.push_back(runs.string());
  }
  return files;
}

std::vector<std::string> submit_command(const SweepPlan& plan, const std::string& runs_file,
                                        const std::string& submit_script,
                                        const std::string& sambay, bool dry_run) {
  // The group's shape is the same for all its runs: take it from the first one listed.
  std::ifstream in(runs_file);
  std::string first;
  std::getline(in, first);
  const PlannedRun* r = nullptr;
  for (const PlannedRun& run : plan.runs)
    if (run.dir == first) r = &run;
  SAMBAY_CHECK(r != nullptr, "{}: first run {} is not in the plan", runs_file, first);
  const SlurmOptions& so = plan.slurm;
  std::vector<std::string> cmd = {"bash", submit_script, "--nodes", std::to_string(r->nodes)};
  if (so.cpu) {
    cmd.insert(cmd.end(), {"--cpu-ranks", std::to_string(r->ranks_per_node)});
  } else {
    cmd.insert(cmd.end(), {"--gpus-per-node", std::to_string(r->ranks_per_node)});
  }
  auto opt = [&](const char* flag, const std::string& v) {
    if (!v.empty()) cmd.insert(cmd.end(), {flag, v});
  };
  opt("--cpus-per-task", so.cpus_per_task > 0 ? std::to_string(so.cpus_per_task) : "");
  opt("--time", so.time);
  opt("--partition", so.partition);
  opt("--account", so.account);
  opt("--qos", so.qos);
  opt("--max-parallel", so.max_parallel > 0 ? std::to_string(so.max_parallel) : "");
  opt("--sambay", sambay);
  if (dry_run) cmd.push_back("--dry-run");
  cmd.push_back("@" + runs_file);
  return cmd;
}

}  // namespace sambay::sweep
