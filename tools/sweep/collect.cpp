#include "tools/sweep/collect.h"

#include "core/check.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/config_file.h"
#include "io/json.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

namespace sambay::sweep {

namespace fs = std::filesystem;

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

RunResult collect_run(const std::string& dir) {
  RunResult r;
  r.dir = fs::absolute(dir).lexically_normal().string();
  r.run = fs::path(r.dir).filename().string();
  const fs::path resolved = fs::path(dir) / "config.ini", asked = fs::path(dir) / "train.ini";
  const ConfigFile cfg = read_config_file(fs::exists(resolved) ? resolved.string() : asked.string());

  ModelConfig mc = model_preset(cfg.get("model", "demo-sambay-da"));
  for (const ConfigEntry& e : cfg.section("model")) set_model_config_field(mc, e.key, e.value, cfg.source);
  r.seq_len = cfg.get_int("seq_len", 256);
  r.steps_planned = cfg.get_int("steps", 0);
  r.depth = mc.n_layers();
  r.d_model = mc.d_model;
  r.params = parameter_count(mc);
  r.non_embedding_params = non_embedding_parameter_count(mc);
  r.flops_per_token = training_flops_per_token(mc, r.seq_len);
  const double archscale_per_token = archscale_estimated_flops_per_token(mc, r.seq_len);

  const fs::path meta_path = fs::path(dir) / "sweep.ini";
  if (fs::exists(meta_path)) {
    const ConfigFile meta = read_config_file(meta_path.string());
    r.run = meta.get("run", r.run);
    r.kind = meta.get("kind");
    r.gpus = meta.get_int("gpus", 1);
    r.nodes = meta.get_int("nodes", 1);
    r.layout = meta.get("layout", "dp");
    r.tp = meta.get_int("tp", 1);
    r.cp = meta.get_int("cp", 1);
    r.dp = meta.get_int("dp", r.gpus);
    r.budget_params = meta.get_double("budget_params", 0);
  }

  r.final_loss = r.final_valid_loss = r.tokens_per_s = NAN;
  std::vector<double> rates;
  const fs::path metrics_path = fs::path(dir) / "metrics.jsonl";
  std::ifstream metrics(metrics_path);
  std::string line;
  // Records by kind ("step", "valid"; older runs have no kind: the keys tell). A value written
  // as null (a NaN) is no number.
  auto number = [](const Json& j, const char* key, double& x) {
    const Json* v = json_find(j, key);
    if (!v || !v->is_number()) return false;
    x = v->get<double>();
    return true;
  };
  while (std::getline(metrics, line)) {
    Json j;
    try {
      j = parse_json(line, metrics_path.string());
    } catch (const Error&) {
      continue;  // the last line of a run killed while writing it
    }
    const Json* kind = json_find(j, "kind");
    const bool is_valid = kind ? *kind == "valid" : json_find(j, "valid_loss") != nullptr;
    const bool is_step = kind ? *kind == "step" : json_find(j, "loss") != nullptr;
    double step = 0, x = 0;
    if (!number(j, "step", step)) continue;
    if (is_valid) {
      r.final_valid_loss = number(j, "valid_loss", x) ? x : NAN;
    } else if (is_step) {
      r.final_loss = number(j, "loss", x) ? x : NAN;
      r.steps_done = static_cast<int64_t>(step);
      if (number(j, "tokens", x)) r.tokens = static_cast<int64_t>(x);
      // The first step carries start-up costs; a resumed run's first step again.
      if (step > 1 && number(j, "tokens_per_s", x)) rates.push_back(x);
    }
  }
  r.tokens_per_s = median(rates);
  r.flops = r.flops_per_token * double(r.tokens);
  r.flops_archscale_estimate = archscale_per_token * double(r.tokens);
  r.flops_6nt = 6.0 *
                (r.budget_params > 0 ? r.budget_params : double(r.non_embedding_params)) *
                double(r.tokens);
  const bool done = fs::exists(fs::path(dir) / "DONE") ||
                    (r.steps_planned > 0 && r.steps_done >= r.steps_planned);
  r.status = done ? "finished" : r.steps_done > 0 ? "partial" : "not started";
  return r;
}

std::vector<RunResult> collect_runs(const std::string& root) {
  if (!fs::is_directory(root)) fail("{}: not a directory", root);
  std::vector<std::string> dirs;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    const fs::path p = entry.path();
    if (fs::exists(p / "train.ini") || fs::exists(p / "config.ini")) dirs.push_back(p.string());
  }
  if (fs::exists(fs::path(root) / "train.ini") || fs::exists(fs::path(root) / "config.ini"))
    dirs.push_back(root);
  std::sort(dirs.begin(), dirs.end());
  std::vector<RunResult> rows;
  for (const std::string& d : dirs) rows.push_back(collect_run(d));
  return rows;
}

void write_results_csv(const std::vector<RunResult>& rows, std::ostream& out) {
  out << "run,kind,status,depth,d_model,params,non_embedding_params,gpus,nodes,layout,tp,cp,dp,"
         "seq_len,steps_planned,steps_done,tokens,flops_per_token,flops,flops_archscale_estimate,"
         "budget_params,flops_6nt,final_loss,final_valid_loss,tokens_per_s,tokens_per_s_per_gpu,"
         "dir\n";
  // Numbers at full precision: losses are compared and fitted downstream.
  auto num = [](double x) { return std::isfinite(x) ? fmt::format("{}", x) : std::string(); };
  for (const RunResult& r : rows)
    out << fmt::format(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", r.run,
        r.kind, r.status, r.depth, r.d_model, r.params, r.non_embedding_params, r.gpus, r.nodes,
        r.layout, r.tp, r.cp, r.dp, r.seq_len, r.steps_planned, r.steps_done, r.tokens,
        num(r.flops_per_token), num(r.flops), num(r.flops_archscale_estimate),
        num(r.budget_params), num(r.flops_6nt), num(r.final_loss), num(r.final_valid_loss),
        num(r.tokens_per_s), num(r.tokens_per_s / r.gpus), r.dir);
}

std::map<std::string, std::vector<std::string>> read_csv_columns(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.push_back("");
    return cells;
  };
  std::string line;
  if (!std::getline(in, line)) fail("{}: empty file", path);
  const std::vector<std::string> header = split(line);
  std::map<std::string, std::vector<std::string>> columns;
  for (const std::string& h : header) columns[h];
  int n = 1;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    const std::vector<std::string> cells = split(line);
    if (cells.size() != header.size())
      fail("{}:{}: {} cells for {} columns", path, n, cells.size(), header.size());
    for (size_t i = 0; i < header.size(); ++i) columns[header[i]].push_back(cells[i]);
  }
  return columns;
}

}  // namespace sambay::sweep
