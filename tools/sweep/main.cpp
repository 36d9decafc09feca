// sambay_sweep: scaling experiments on Slurm.
//   plan SPEC.ini     write the run directories of a depth sweep or scaling study and submit
//                     them as job arrays (--dry-run: print the sbatch commands instead)
//   collect DIR       one CSV row per run directory under DIR
//   fit RESULTS.csv   L(C) = A C^-alpha + E over the finished runs
//   perf INPUTS.ini   predicted step time and scaling efficiency for 1..N GPUs
// docs/scaling.md describes the spec and input files.
#include "launch/command_line.h"
#include "core/check.h"
#include "core/model.h"
#include "core/model_config.h"
#include "launch/train_config.h"
#include "tools/sweep/collect.h"
#include "core/config_file.h"
#include "tools/sweep/perf_model.h"
#include "tools/sweep/power_law_fit.h"
#include "tools/sweep/sweep_plan.h"

#include <boost/program_options.hpp>
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace sambay::sweep {
namespace {

constexpr const char* kUsage = R"(usage: sambay_sweep <command> [options]

commands:
  plan SPEC.ini       write a sweep's run directories and submit its job arrays
  collect DIR         gather every run under DIR into one CSV
  fit RESULTS.csv     fit L(C) = A * C^(-alpha) + E to the finished runs
  perf INPUTS.ini     predict step time and scaling efficiency from a single-GPU profile
)";

bool parse(int argc, const char* const* argv, po::options_description& o, po::variables_map& vm,
           const char* usage, const char* positional) {
  po::positional_options_description pos;
  pos.add(positional, 1);
  return parse_command_line(argc, argv, o, pos, vm, usage);
}

std::string shell_quote(const std::string& s) {
  if (s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@%+=:,./-_") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs a command and returns its standard output; throws with the command on failure.
std::string run_command(const std::vector<std::string>& cmd) {
  std::string line;
  for (const std::string& a : cmd) {
    if (!line.empty()) line += ' ';
    line += shell_quote(a);
  }
  FILE* pipe = popen(line.c_str(), "r");
  if (!pipe) fail("cannot run: {}", line);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (status != 0) fail("this command failed (status {}): {}", status, line);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// --set section.key=value options: each replaces every value the file gives that key.
void apply_overrides(ConfigFile& ini, const std::vector<std::string>& overrides) {
  for (const std::string& kv : overrides) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("--set '{}' is not section.key=value", kv);
    const std::string key = kv.substr(0, eq);
    std::erase_if(ini.entries, [&](const ConfigEntry& e) { return e.key == key; });
    ini.entries.push_back({key, kv.substr(eq + 1), 0});
  }
}

std::string self_dir() { return fs::canonical("/proc/self/exe").parent_path().string(); }

// The run's config as sambay train would read it: unknown options and bad values fail here,
// before anything is submitted.
void validate_run(const PlannedRun& run) {
  const fs::path tmp = fs::temp_directory_path() / fmt::format("sambay_sweep_{}_{}.ini", getpid(), run.name);
  std::ofstream(tmp) << config_text(run);
  const std::string path = tmp.string();
  const char* argv[] = {"train", "--config", path.c_str()};
  TrainConfig parsed;
  try {
    parse_train_config(3, argv, parsed);
  } catch (const Error& e) {
    fs::remove(tmp);
    fail("run {}: sambay train rejects its config: {}", run.name, e.what());
  }
  fs::remove(tmp);
}

int cmd_plan(int argc, const char* const* argv) {
  std::string spec_path, sambay = self_dir() + "/sambay",
                         submit = std::string(SAMBAY_SOURCE_DIR) + "/slurm/submit.sh";
  bool dry_run = false, no_validate = false;
  std::vector<std::string> overrides;
  po::options_description o("sambay_sweep plan");
  o.add_options()("spec", po::value(&spec_path)->required(), "sweep spec (INI, positional)")
      ("set", po::value(&overrides), "section.key=value overriding the spec (repeatable), e.g. depth.family=archscale-samba-yoco")
      ("dry-run", flag(&dry_run), "write the run directories, print the sbatch commands, submit nothing")
      ("no-validate", flag(&no_validate), "do not check the configs with this build's sambay train")
      ("sambay", po::value(&sambay)->default_value(sambay), "the sambay binary the jobs run")
      ("submit-script", po::value(&submit)->default_value(submit), "slurm/submit.sh");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay_sweep plan SPEC.ini [--dry-run]", "spec")) return 0;

  ConfigFile spec = read_config_file(spec_path);
  apply_overrides(spec, overrides);
  const SweepPlan plan = plan_sweep(spec, spec_path);
  if (!no_validate)
    for (const PlannedRun& r : plan.runs) validate_run(r);
  fmt::print("sweep {} ({}): {} runs in {}\n", plan.name, plan.kind, plan.runs.size(), plan.out_dir);
  const bool estimated = !plan.runs.empty() && plan.runs[0].est_step_seconds > 0;
  fmt::print("{:<12} {:>6} {:>12} {:>5} {:>6} {:>6} {:>7} {:>7} {:>14} {:>9}{}\n", "run", "depth",
             "params", "gpus", "nodes", "layout", "mb x ga", "steps", "tokens", "lr",
             estimated ? fmt::format(" {:>8} {:>8} {:>10} {:>9}", "step(s)", "hours", "GPU-hours",
                                     "mem(GiB)")
                       : "");
  double gpu_hours = 0;
  for (const PlannedRun& r : plan.runs) {
    std::string est;
    if (r.est_step_seconds > 0) {
      const double hours = r.steps * r.est_step_seconds / 3600;
      gpu_hours += hours * r.ranks;
      est = fmt::format(" {:>8.3f} {:>8.1f} {:>10.0f} {:>9.1f}{}", r.est_step_seconds, hours,
                        hours * r.ranks, r.est_memory_bytes / 1073741824.0,
                        r.est_memory_bytes > r.gpu_memory ? " (too big)" : "");
    }
    fmt::print("{:<12} {:>6} {:>12} {:>5} {:>6} {:>6} {:>7} {:>7} {:>14} {:>9}{}\n", r.name,
               r.depth, r.params, r.ranks, r.nodes, r.layout.name(),
               fmt::format("{}x{}", r.micro_batch, r.grad_accum), r.steps, r.tokens,
               r.lr > 0 ? fmt::format("{:.3g}", r.lr) : "", est);
  }
  if (estimated)
    fmt::print("estimated total: {:.0f} GPU-hours ([estimate]: the performance model from a "
               "measured MFU; see docs/scaling.md)\n",
               gpu_hours);
  for (const std::string& s : plan.skipped) fmt::print("skipped {}\n", s);
  for (const std::string& runs : write_plan(plan)) {
    const std::string out = run_command(submit_command(plan, runs, submit, sambay, dry_run));
    if (dry_run)
      fmt::print("{}\n", out);
    else
      fmt::print("submitted {} as job array {}\n", runs, out);
  }
  return 0;
}

int cmd_collect(int argc, const char* const* argv) {
  std::string dir, out;
  po::options_description o("sambay_sweep collect");
  o.add_options()("dir", po::value(&dir)->required(), "directory holding run directories (positional)")
      ("out", po::value(&out), "CSV to write (default DIR/results.csv)");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay_sweep collect DIR [--out FILE]", "dir")) return 0;
  if (out.empty()) out = (fs::path(dir) / "results.csv").string();
  const std::vector<RunResult> rows = collect_runs(dir);
  if (rows.empty()) fail("{}: no run directories (with train.ini or config.ini) found", dir);
  std::ofstream file(out);
  write_results_csv(rows, file);
  if (!file) fail("{}: cannot write", out);
  int finished = 0;
  for (const RunResult& r : rows) finished += r.status == "finished";
  fmt::print("{} runs ({} finished) -> {}\n", rows.size(), finished, out);
  return 0;
}

int cmd_fit(int argc, const char* const* argv) {
  std::string csv, x_col, y_col, out;
  bool free_e = false;
  po::options_description o("sambay_sweep fit");
  o.add_options()("results", po::value(&csv)->required(), "CSV from collect (positional)")
      ("x", po::value(&x_col)->default_value("flops"), "compute column")
      ("y", po::value(&y_col)->default_value("final_valid_loss"), "loss column")
      ("free-E", flag(&free_e), "let E go below zero (default: E >= 0)")
      ("out", po::value(&out), "write the fit as INI here (for tools/scaling_plots.py)");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay_sweep fit RESULTS.csv [--y COLUMN]", "results")) return 0;
  auto cols = read_csv_columns(csv);
  for (const std::string& c : {x_col, y_col, std::string("status")})
    if (!cols.count(c)) fail("{}: no column '{}'", csv, c);
  std::vector<double> C, L;
  for (size_t i = 0; i < cols[x_col].size(); ++i) {
    if (cols["status"][i] != "finished" || cols[x_col][i].empty() || cols[y_col][i].empty()) continue;
    C.push_back(std::stod(cols[x_col][i]));
    L.push_back(std::stod(cols[y_col][i]));
  }
  PowerLawFitOptions options;
  options.nonnegative_E = !free_e;
  const PowerLawFit f = fit_power_law(C, L, options);
  fmt::print("L(C) = {:.6g} * C^(-{:.6g}) + {:.6g}   ({} finished runs, rms residual {:.3g}, R^2 {:.6f})\n",
             f.A, f.alpha, f.E, f.points, f.rms_residual, f.r_squared);
  // The collector's compute conventions (tools/sweep/collect.h).
  const std::map<std::string, std::string> conventions = {
      {"flops", "sambay's exact FLOPs count"},
      {"flops_archscale_estimate", "ArchScale's estimate_flops"},
      {"flops_6nt", "6 N T, ArchScale's plots (N: its N(D) for budget runs)"}};
  if (auto it = conventions.find(x_col); it != conventions.end())
    fmt::print("C: column {} = {}\n", x_col, it->second);
  if (f.E_at_zero)
    fmt::print("note: E = 0 is the bound of the fit (E >= 0): these runs show no irreducible loss yet\n");
  if (f.alpha_at_range_edge)
    fmt::print("warning: alpha = {} is an end of the searched range: the data do not determine it\n", f.alpha);
  if (!out.empty()) {
    std::ofstream file(out);
    file << fmt::format("# L(C) = A * C^(-alpha) + E fitted to {} ({} vs {})\nA = {}\nalpha = {}\nE = {}\n"
                        "points = {}\nrms_residual = {}\nr_squared = {}\nE_at_zero = {}\nalpha_at_range_edge = {}\n"
                        "x = {}\ny = {}\n",
                        csv, y_col, x_col, f.A, f.alpha, f.E, f.points, f.rms_residual,
                        f.r_squared, f.E_at_zero, f.alpha_at_range_edge, x_col, y_col);
  }
  return 0;
}

// A value from the inputs, and whether it was measured or assumed (for the labels).
struct Input {
  double value;
  bool assumed;
};

int cmd_perf(int argc, const char* const* argv) {
  std::string inputs_path, out;
  std::vector<std::string> overrides;
  po::options_description o("sambay_sweep perf");
  o.add_options()("inputs", po::value(&inputs_path)->required(), "INI with [model], [profile], [cluster], [parallel] (positional)")
      ("set", po::value(&overrides), "section.key=value overriding the file (repeatable), e.g. a measured profile.seconds_per_token")
      ("out", po::value(&out), "write the predictions as CSV here");
  po::variables_map vm;
  if (!parse(argc, argv, o, vm, "usage: sambay_sweep perf INPUTS.ini [--set section.key=value] [--out FILE]", "inputs"))
    return 0;
  ConfigFile in = read_config_file(inputs_path);
  apply_overrides(in, overrides);

  const ModelConfig mc = model_preset(in.get("model.preset", "phi4-mini-flash"));
  const int64_t L = in.get_int("model.seq_len", 4096);
  const int64_t micro_seqs = in.get_int("parallel.micro_batch", 1);
  const bool recompute = in.get_bool("model.recompute", true);
  const double flops_per_token = training_flops_per_token(mc, L);
  auto input = [&](const std::string& measured, double derived) {
    return in.has(measured) ? Input{in.get_double(measured, 0), false} : Input{derived, true};
  };
  const double peak = in.get_double("cluster.peak_flops", 989e12);
  const Input spt = input("profile.seconds_per_token",
                          flops_per_token / (in.get_double("profile.assumed_mfu", 0.4) * peak));
  const Input opt = input("profile.optimizer_seconds",
                          parameter_count(mc) * in.get_double("profile.assumed_optimizer_bytes_per_param", 36) /
                              in.get_double("profile.assumed_hbm_bandwidth", 3.35e12 * 0.7));
  StepProfile prof;
  prof.seconds_per_token = spt.value;
  prof.optimizer_seconds = opt.value;
  prof.params = double(parameter_count(mc));
  prof.d_model = mc.d_model;
  prof.n_layers = mc.n_layers();
  prof.activation_bytes_per_micro_batch = double(activation_bytes(mc, micro_seqs, L, recompute, 2));
  const ClusterSpec cl = cluster_spec_from(in, "cluster");
  ParallelConfig base;
  base.micro_batch_tokens = double(micro_seqs * L);
  base.tokens_per_replica = double(in.get_int("parallel.sequences_per_replica", 8) * L);
  base.grad_bytes = in.get_double("parallel.grad_bytes", 2);
  base.param_bytes = in.get_double("parallel.param_bytes", 2);
  base.optimizer_state_bytes = in.get_double("parallel.optimizer_state_bytes", 12);
  base.tp_collectives_per_layer = in.get_int("parallel.tp_collectives_per_layer", 8);
  base.bucket_params = in.get_double("parallel.bucket_params", 0);
  base.overlap_grad_reduce = in.get_bool("parallel.overlap_grad_reduce", true);
  base.overlap_param_gather = in.get_bool("parallel.overlap_param_gather", true);
  base.tp_compute_efficiency = in.get_double("parallel.tp_compute_efficiency", 1.0);

  const int64_t global_seqs = in.get_int("parallel.global_sequences", 0);
  fmt::print("model {} ({:.3f}B parameters, {:.2f} GFLOP/token at L = {}), {}, micro-batch {}\n",
             mc.name, prof.params / 1e9, flops_per_token / 1e9, L,
             global_seqs > 0 ? fmt::format("global batch {} sequences", global_seqs)
                             : fmt::format("{} sequences per replica", base.tokens_per_replica / L),
             micro_seqs);
  fmt::print("seconds per token {:.4g}{}, optimizer {:.4g} s{}\n", spt.value,
             spt.assumed ? " (ASSUMED: profile.assumed_mfu of the peak)" : " (measured)", opt.value,
             opt.assumed ? " (ASSUMED: bytes per parameter / HBM bandwidth)" : " (measured)");
  // Weak scaling (default): each replica keeps sequences_per_replica. Strong scaling
  // (parallel.global_sequences): the global batch is fixed and split over the replicas, and
  // the efficiency is against one GPU stepping the whole global batch.
  std::ofstream csv;
  if (!out.empty()) {
    csv.open(out);
    csv << "gpus,nodes,tp,dp,tokens_per_replica,step_s,compute_s,tp_comm_s,grad_reduce_scatter_s,"
           "param_all_gather_s,exposed_dp_comm_s,optimizer_s,tokens_per_s,tokens_per_s_per_gpu,"
           "efficiency,comm_efficiency,mfu,memory_gib,fits\n";
  }
  fmt::print("{} scaling\n| GPUs | nodes | TP | DP | seqs/replica | step (s) | exposed comm (s) | "
             "tokens/s | tokens/s/GPU | efficiency | comm eff. | MFU | memory/GPU (GiB) |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
             global_seqs > 0 ? "strong (global batch fixed)" : "weak (batch per replica fixed)");
  for (const std::string& t : split_list(in.get("parallel.tp", "1"))) {
    for (const std::string& g : split_list(in.get("parallel.gpus", "1 2 4 8 16 32 64 128 256 512 1024"))) {
      ParallelConfig pc = base;
      pc.gpus = std::stoll(g);
      pc.tp = std::stoll(t);
      if (pc.gpus % pc.tp != 0) continue;
      double reference = 0;  // tokens/s of the one-GPU run the efficiency is measured against
      if (global_seqs > 0) {
        const int64_t dp = pc.gpus / pc.tp;
        if (global_seqs % dp != 0 || global_seqs / dp < micro_seqs) continue;
        pc.tokens_per_replica = double(global_seqs / dp * L);
        ParallelConfig one = base;
        one.tokens_per_replica = double(global_seqs * L);
        reference = predict_step(prof, cl, one).tokens_per_s;
      }
      const StepPrediction p = predict_step(prof, cl, pc);
      const double eff = reference > 0 ? p.tokens_per_s / (pc.gpus * reference) : p.efficiency;
      const double mfu = flops_per_token * p.tokens_per_s_per_gpu / peak;
      const double gib = p.memory_bytes / (1024.0 * 1024 * 1024);
      fmt::print("| {} | {} | {} | {} | {} | {:.3f} | {:.3f} | {:.4g} | {:.4g} | {:.3f} | {:.3f} | "
                 "{:.1f}% | {:.1f}{} |\n",
                 p.gpus, p.nodes, p.tp, p.dp, pc.tokens_per_replica / L, p.step,
                 p.tp_comm + p.exposed_dp_comm, p.tokens_per_s, p.tokens_per_s_per_gpu, eff,
                 p.comm_efficiency, 100 * mfu, gib,
                 p.memory_bytes > cl.gpu_memory ? " (too big)" : "");
      if (csv.is_open())
        csv << fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", p.gpus,
                           p.nodes, p.tp, p.dp, pc.tokens_per_replica, p.step, p.compute,
                           p.tp_comm, p.grad_reduce_scatter, p.param_all_gather,
                           p.exposed_dp_comm, p.optimizer, p.tokens_per_s,
                           p.tokens_per_s_per_gpu, eff, p.comm_efficiency, mfu, gib,
                           p.memory_bytes <= cl.gpu_memory);
    }
  }
  return 0;
}

int dispatch(int argc, const char* const* argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "plan") return cmd_plan(argc - 1, argv + 1);
  if (cmd == "collect") return cmd_collect(argc - 1, argv + 1);
  if (cmd == "fit") return cmd_fit(argc - 1, argv + 1);
  if (cmd == "perf") return cmd_perf(argc - 1, argv + 1);
  fail("unknown command '{}' (see sambay_sweep --help)", cmd);
}

}  // namespace
}  // namespace sambay::sweep

int main(int argc, char** argv) {
  try {
    return sambay::sweep::dispatch(argc, argv);
  } catch (const sambay::Error& e) {
    fmt::print(stderr, "sambay_sweep: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sambay_sweep: internal error: {}\n", e.what());
    return 3;
  }
}
