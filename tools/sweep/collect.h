// The collector: one row per run directory (its config, its metrics.jsonl, what the sweep
// planned), written as one CSV for plots and fits.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace sambay::sweep {

struct RunResult {
  std::string run, dir, kind, layout = "dp", status;  // status: finished, partial, not started
  int64_t depth = 0, d_model = 0, params = 0, non_embedding_params = 0;
  int64_t gpus = 1, nodes = 1, tp = 1, cp = 1, dp = 1;
  int64_t seq_len = 0, steps_planned = 0, steps_done = 0, tokens = 0;
  // Training compute in three conventions (core/model.h), labelled in the CSV header:
  double flops_per_token = 0;  // sambay's exact count (matrix products + attention under masks)
  double flops = 0;            // flops_per_token * tokens
  double flops_archscale_estimate = 0;  // ArchScale's estimate_flops per token * tokens
  double budget_params = 0;    // ArchScale's N(D) when a [budget] planned the run, else 0
  double flops_6nt = 0;        // 6 N tokens: N = budget_params, or the non-embedding count
  double final_loss = 0, final_valid_loss = 0;  // NaN when never logged
  double tokens_per_s = 0;  // median over logged steps after the first (NaN when none)
};

// Reads RUN_DIR/config.ini (the trainer's resolved config; train.ini before the first start),
// sweep.ini (when a sweep planned the run) and metrics.jsonl. Throws naming the file at fault.
RunResult collect_run(const std::string& dir);

// Every run directory under `root` (a directory holding train.ini or config.ini), by path.
std::vector<RunResult> collect_runs(const std::string& root);

void write_results_csv(const std::vector<RunResult>& rows, std::ostream& out);

// A CSV with a header line, as columns by name (values unparsed). Throws naming the path.
std::map<std::string, std::vector<std::string>> read_csv_columns(const std::string& path);

}  // namespace sambay::sweep
