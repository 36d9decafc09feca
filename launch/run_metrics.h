// What a training run records, on rank 0: one JSON object per line in out_dir/metrics.jsonl and,
// with --tensorboard, the same numbers as TensorBoard scalars in out_dir/tensorboard/.
//
// Every record has "kind", "step" (the optimizer steps done) and "wall_time" (Unix seconds):
//   run_start / resume  UTC time, run id, the resolved config, the placement (ranks, layout,
//                       device, hosts), the version and git commit; a resume names its checkpoint
//   step                loss, lr, grad_norm, tokens, tokens_per_s, step_ms, elapsed_s,
//                       memory_mib, flops_per_s and (on a GPU) mfu
//   valid               valid_loss
//   checkpoint          dir, seconds, bytes
//   end                 reason ("done", "signal SIGUSR1", "log write failed: ...", ...), steps
//                       and tokens trained, train_s
// A number that is not finite (a NaN loss) is written as null: every line is valid JSON.
#pragma once

#include "io/json.h"
#include "io/tensorboard.h"
#include "launch/run_log.h"

#include <cstdint>
#include <memory>
#include <string>

namespace sambay {

struct TrainConfig;

// The resolved config as JSON: config.ini's keys with typed values (numbers, booleans, strings;
// repeated keys such as data as arrays).
Json train_config_json(const TrainConfig& c);

// A record of `kind` at `step`, stamped with the wall time.
Json metrics_record(const char* kind, int64_t step);

// The run's records, written through its RunLog (launch/run_log.h): a write that fails, to
// metrics.jsonl or to the event file, is answered as --on_log_error says.
class RunMetrics {
 public:
  explicit RunMetrics(RunLog& log) : log_(log) {}

  // Opens out_dir/metrics.jsonl for appending (a line cut by a kill is ended first) and, when
  // `tensorboard`, a new event file in out_dir/tensorboard. Errors name the file. Called on
  // the lead rank only; on the others write() does nothing.
  void open(const std::string& out_dir, bool tensorboard);

  // Appends the record; its numbers also go to TensorBoard: a step record's as train/<key>, a
  // valid record's valid_loss as valid/loss. Does nothing before open().
  void write(const Json& record);

 private:
  RunLog& log_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace sambay
