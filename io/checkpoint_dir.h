// The checkpoints directory of a run:
//   checkpoints/step_00000100/      a complete checkpoint (renamed into place only when done)
//   checkpoints/step_00000200.tmp/  one being written, or left by a crash (never loaded)
//   checkpoints/latest              "step_00000200\n", replaced atomically after each save
// A step directory without ".tmp" is complete by construction; `latest` names the newest for
// scripts and people, and resuming scans the directories themselves, so a crash between the
// rename and the pointer update loses nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

std::string step_dir_name(int64_t step);  // "step_00000012"

struct StepDir {
  int64_t step;
  std::string path;
};

// Complete step directories, newest first. A missing directory has none.
std::vector<StepDir> list_checkpoints(const std::string& checkpoints_dir);

// Points `latest` at the step directory (durably).
void write_latest(const std::string& checkpoints_dir, int64_t step);

// After the checkpoint of `current_step` was written: removes step directories newer than it
// (left by a run that was resumed from an earlier checkpoint: they would otherwise be taken for
// this run's newest), all but the newest `keep` (>= 1) of the rest (the current one is always
// kept), and leftovers (remove_checkpoint_leftovers). Returns the removed paths.
std::vector<std::string> prune_checkpoints(const std::string& checkpoints_dir,
                                           int64_t current_step, int keep);

// Unfinished checkpoints (step_XXXXXXXX.tmp/, left by a crash or a failed save) and temporary
// files of interrupted atomic writes (latest.tmp.XXXXXX) in checkpoints_dir: removes them and
// returns their paths. Only for a directory this process owns (the trainer holds the run lock).
std::vector<std::string> remove_checkpoint_leftovers(const std::string& checkpoints_dir);

// What a user may name as a checkpoint: a step directory (it has manifest.txt or index.h5), a
// checkpoints directory, or a run directory holding "checkpoints/". Returns
// {checkpoints directory, ""} for the last two and {"", step directory} for the first.
struct CheckpointLocation {
  std::string checkpoints_dir;
  std::string step_dir;
};
CheckpointLocation locate_checkpoint(const std::string& path);

}  // namespace sambay
