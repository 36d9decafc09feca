// Resuming a run: which checkpoint --resume names, and what differs from the run that wrote it.
#pragma once

#include "io/checkpoint.h"
#include "launch/train_config.h"

#include <functional>
#include <optional>
#include <string>

namespace sambay {

// Loads the checkpoint --resume names with `load` (every rank its part: io/checkpoint.h
// load_checkpoint_part); all_loaded (a collective) tells whether every rank loaded it cleanly:
// none: nothing (refused when checkpoints_dir already holds checkpoints, since this run's saves
// would prune or replace them); auto: the newest good checkpoint in checkpoints_dir, falling
// back past damaged ones (each reported on stdout), or nothing when there is none; a path: that
// step directory, or the newest good one of that directory. Reports go to stdout when `report`
// (rank 0 of a job; every rank loads).
std::optional<CheckpointInfo> find_resume_checkpoint(
    const TrainConfig& cfg, const std::string& checkpoints_dir,
    const std::function<CheckpointInfo(const std::string& step_dir)>& load,
    const std::function<bool(bool loaded_here)>& all_loaded, bool report);

// Options that differ between the checkpoint's run and this one and change what training
// computes (out_dir, logging and checkpoint options are left out), as "name: old -> new";
// plus the thread count, which bit-exact CPU results depend on.
std::vector<std::string> resume_differences(const CheckpointInfo& info, const TrainConfig& cfg,
                                            int threads);

}  // namespace sambay
