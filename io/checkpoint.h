// sambay checkpoints: what they hold, writing them atomically, and loading them verified.
// The file layout is documented in docs/checkpoint-format.md.
//
// A checkpoint is a directory step_XXXXXXXX/ (io/checkpoint_dir.h) holding
//   rank_00000.h5 ...  one per rank: the pieces of every tensor that rank owns (io/tensor_shards.h)
//   index.h5           metadata, configs, training state, and a virtual dataset per global tensor
//   manifest.txt       written last: the run id, file sizes and checksums
//                      (io/checkpoint_manifest.h)
// Every file names the run (a random id kept across resumes) and the step, and the manifest
// holds a checksum of each file, so that no file can be mixed in from another run or another
// save of the same step. A checkpoint whose weights or moments are not all finite is never
// written, and one on disk is refused when loaded.
// Tensors: model/<path> (fp32 master weights), optim/m/<path> and optim/v/<path> (AdamW
// moments), where <path> is the parameter name with its module levels as groups
// ("layers.7.mixer.in_proj.weight" -> "layers.7/mixer/in_proj/weight").
#pragma once

#include "core/check.h"
#include "core/model_config.h"
#include "io/tensor_shards.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sambay {

// Version 2 added run ids and rank-file checksums; version 1 checkpoints are still read.
constexpr int64_t kCheckpointFormatVersion = 2;
constexpr int64_t kOldestReadableCheckpointVersion = 1;

// A new run id: 32 hex digits from the system's random source.
std::string new_run_id();

// Everything besides the tensors that continuing a run needs.
struct TrainState {
  int64_t step = 0;              // optimizer steps completed (AdamW's step count)
  int64_t consumed_samples = 0;  // training sequences consumed, over all ranks
  int64_t consumed_tokens = 0;
  // The sampler is a pure function of (sources, seq_len, seed, sample index), so these and
  // consumed_samples are its whole state.
  std::string data_sources;  // "path:weight" entries separated by ';'
  uint64_t data_seed = 0;
  int64_t seq_len = 0;
  int64_t global_batch = 0;  // sequences per optimizer step
  double valid_fraction = 0;
  // Learning-rate schedule (optim/schedule.h) and the rate of the last step.
  std::string schedule;
  double peak_lr = 0, last_lr = 0, min_lr_ratio = 0, decay_fraction = 0;
  int64_t warmup = 0, total_steps = 0;
  // Random state: parameter initialisation is the only draw the trainer makes (no dropout).
  uint64_t init_seed = 0;
  // OpenMP threads of the run: a CPU resume is bit-exact with the same count.
  int64_t threads = 0;
};

// How the writing run was parallelised; today always 1 x 1 x 1, rank 0.
struct ParallelPlacement {
  int64_t dp = 1, tp = 1, cp = 1;
  int64_t world_size() const { return dp * tp * cp; }
};

// What a checkpoint describes, read from its index (tensor data not read yet).
struct CheckpointInfo {
  std::string dir;
  int64_t step = 0;
  int64_t format_version = kCheckpointFormatVersion;
  std::string run_id;  // empty for version 1
  std::string sambay_version, git_commit, created;
  std::string model_config_text, train_config_text;
  ModelConfig model;
  TrainState state;
  ParallelPlacement parallel;
  std::vector<GlobalTensor> tensors;
};

// A loaded checkpoint: the info and the three flat buffers in the layout of info.model.
struct LoadedCheckpoint {
  CheckpointInfo info;
  std::vector<float> params, adam_m, adam_v;
};

// The model config of a checkpoint differs from the one it is loaded for. Not damage: resuming
// does not fall back to older checkpoints over it.
struct CheckpointMismatch : Error {
  using Error::Error;
};

// A model config from its text form (model_config_to_text), validated; errors name `where`.
ModelConfig parse_model_config_text(const std::string& text, const std::string& where);

// The group path of a parameter name: module levels become groups, "layers.7" stays together.
std::string tensor_group_path(const std::string& param_name);

// What one save writes; spans hold layout.total values each.
struct CheckpointView {
  const ModelConfig& model;
  const std::string& train_config_text;
  const TrainState& state;
  std::span<const float> params, adam_m, adam_v;
  std::string run_id = {};  // the run's id; empty: a new one (an import, a benchmark)
};

// Writes checkpoints_dir/step_XXXXXXXX/ (through step_XXXXXXXX.tmp/, every file fsynced, then
// renamed), updates `latest`, and prunes to the newest `keep`. Returns the directory and the
// paths that pruning removed. Refuses weights or moments that are not all finite (the shard
// writer checks every block as it checksums it) and, before writing, a file system with less
// free space than the tensors need; a failed or refused write (a full disk, NaN) removes the
// unfinished directory and leaves older checkpoints as they were.
struct SaveResult {
  std::string dir;
  std::vector<std::string> removed;
  int64_t bytes = 0;  // written in the checkpoint directory
};
SaveResult save_checkpoint(const std::string& checkpoints_dir, const CheckpointView& view,
                           int keep);

// Verifies the manifest and the index of a step directory and reads its description.
CheckpointInfo read_checkpoint_info(const std::string& step_dir);

// Fields (after "model.") whose values differ, "d_model: 128 in the checkpoint, 64 here" each;
// the preset name is a label and is not compared.
std::vector<std::string> model_config_differences(const ModelConfig& stored,
                                                  const ModelConfig& wanted);

// Where a load puts the tensors: the trainer's own buffers (layout.total values each), so that
// resuming allocates nothing. After a failed load their contents are unspecified.
struct CheckpointTargets {
  std::span<float> params, adam_m, adam_v;
};

// Loads and verifies every tensor into `out`. With `expected`, a different model config throws
// CheckpointMismatch naming every differing field; without, the checkpoint's own config is used
// (and `out` must match its layout). Weights or moments that are not all finite are an error
// (the checkpoint cannot be trained from: resuming falls back to an older one).
CheckpointInfo load_checkpoint_into(const std::string& step_dir,
                                    const std::optional<ModelConfig>& expected,
                                    const CheckpointTargets& out);

// The same into new buffers.
LoadedCheckpoint load_checkpoint(const std::string& step_dir,
                                 const std::optional<ModelConfig>& expected);

// Verifies every piece of every tensor; returns, per tensor and piece, its checksum and how
// many of its values are not finite.
std::vector<std::vector<ShardReader::PieceCheck>> verify_checkpoint_data(
    const CheckpointInfo& info);

// Loads the newest checkpoint in checkpoints_dir that loads cleanly into `out`. A damaged one
// is reported through `report` (naming it and why) and the next older one tried; a config
// mismatch is thrown. Returns nothing (and leaves `out` alone) when the directory has no
// checkpoints; throws when all are damaged.
std::optional<CheckpointInfo> load_newest_checkpoint(
    const std::string& checkpoints_dir, const ModelConfig& expected,
    const std::function<void(const std::string&)>& report, const CheckpointTargets& out);

}  // namespace sambay
