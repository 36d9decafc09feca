// Saving checkpoints from every rank of a job, in the background while training goes on.
//
// Each rank stores what it owns (io/checkpoint_shards.h): for its ZeRO ranges, the weights and
// both AdamW moments, in its own rank file; rank 0 also writes the index, whose virtual datasets
// join every rank's pieces, and commits. Nothing is gathered: a rank's host memory for a save is
// one snapshot of its owned values (pinned on the GPU, so the copy is a DMA at full speed).
//
// A save runs in three stages:
//   1. (collective, the training loop waits) the previous save is completed; rank 0 makes the
//      step_XXXXXXXX.tmp/ directory; every rank copies its owned values into its snapshot;
//   2. (each rank's writer thread, or in line for a synchronous save) the rank file, and on
//      rank 0 the index, written and fsynced;
//   3. (collective) once every rank's file is written, rank 0 writes the manifest and renames
//      the directory: the commit (io/checkpoint.h). A background save is committed by the
//      first poll() after every rank has finished, or by the next save, or by finish().
// A crash before the commit leaves the previous checkpoint the newest complete one. A write that
// fails on any rank removes the unfinished directory and ends the job (exit 2), as a
// synchronous save does.
#pragma once

#include "io/checkpoint.h"
#include "parallel/communicator.h"
#include "parallel/data_parallel.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace sambay {

// The ranges of a ZeRO shard layout a rank owns (adjacent ones merged), as checkpoints see them.
RankOwnership ownership_of(const ShardLayout& zero, int tp, int tp_rank);

// Host buffers of the owned values: weights, first and second moments, `size` floats each.
class OwnedSnapshot {
 public:
  OwnedSnapshot(int64_t size, bool pinned);
  ~OwnedSnapshot();
  OwnedSnapshot(const OwnedSnapshot&) = delete;
  OwnedSnapshot& operator=(const OwnedSnapshot&) = delete;
  float* params() { return data_; }
  float* adam_m() { return data_ + size_; }
  float* adam_v() { return data_ + 2 * size_; }
  int64_t size() const { return size_; }

 private:
  int64_t size_;
  bool pinned_;
  float* data_ = nullptr;
};

// What a committed save reports (on rank 0; the other ranks get only step and async).
struct CheckpointCommit {
  int64_t step = 0;
  bool async = false;
  std::string dir;
  int64_t bytes = 0;          // the whole checkpoint directory
  double write_s = 0;         // rank 0's file writes (its thread's time for a background save)
  double total_s = 0;         // from the snapshot to the commit
  std::vector<std::string> removed;  // pruned checkpoints
};

class CheckpointWriter {
 public:
  // meta: the run's description (its state is set per save); pieces_by_rank[r]: what world
  // rank r stores (every rank's on rank 0, which writes the index; at least this rank's on the
  // others); buffer_size: this rank's owned-value count; pinned: page-locked snapshot buffers.
  CheckpointWriter(const Communicator& world, std::string checkpoints_dir, int keep,
                   CheckpointMeta meta, std::vector<std::vector<StoredPiece>> pieces_by_rank,
                   int64_t buffer_size, bool pinned);
  ~CheckpointWriter();  // waits for a write in flight (a failing job); commits nothing
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Copies this rank's owned values into the snapshot: weights, m, v ([buffer_size] each).
  using Fill = std::function<void(float* params, float* adam_m, float* adam_v)>;
  // Collective: completes a pending save, then saves `state`. In the background (async) the
  // call returns once the snapshot is taken; otherwise once the checkpoint is committed and
  // every rank has passed it. live_m / live_v: the rank's moment buffers, written from directly
  // by a synchronous save (fill then gets null for them); empty: from the snapshot. Returns the
  // saves committed during the call (the pending one, and a synchronous one).
  std::vector<CheckpointCommit> save(const TrainState& state, bool async, const Fill& fill,
                                     std::span<const float> live_m = {},
                                     std::span<const float> live_v = {});
  // Collective, once per step: commits a background save that every rank has written.
  std::optional<CheckpointCommit> poll();
  // Collective: waits for a background save and commits it.
  std::optional<CheckpointCommit> finish();
  bool pending() const { return pending_.has_value(); }

 private:
  struct Pending {
    int64_t step = 0;
    bool async = false;
    std::string tmp_dir;
    double started = 0;  // seconds on the writer's clock
    std::span<const float> params, adam_m, adam_v;
    // Filled by the write (the writer thread for a background save).
    RankFileResult result;
    std::string error;
    double write_s = 0;
  };
  void write(Pending& p);  // stage 2
  CheckpointCommit commit();  // stage 3 (collective)
  double now() const;

  const Communicator& world_;
  const std::string checkpoints_dir_;
  const int keep_;
  CheckpointMeta meta_;
  const std::vector<std::vector<StoredPiece>> pieces_by_rank_;
  const int64_t buffer_size_;
  const bool pinned_;
  std::unique_ptr<OwnedSnapshot> snapshot_;  // allocated by the first save
  std::optional<Pending> pending_;
  std::thread thread_;
  std::atomic<bool> written_{false};
};

}  // namespace sambay
