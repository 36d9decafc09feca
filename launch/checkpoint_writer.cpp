#include "launch/checkpoint_writer.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "io/checkpoint_dir.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <new>

namespace sambay {

RankOwnership ownership_of(const ShardLayout& zero, int tp, int tp_rank) {
  RankOwnership o;
  o.tp = tp, o.tp_rank = tp_rank;
  o.buffer_size = zero.shard_size;
  for (const ShardBucket& b : zero.buckets) {
    const FlatRange own = owned_range(zero, b, zero.rank);
    if (own.end <= own.begin) continue;
    if (!o.ranges.empty() && o.ranges.back().end == own.begin &&
        o.ranges.back().pos + (o.ranges.back().end - o.ranges.back().begin) == b.shard_offset)
      o.ranges.back().end = own.end;  // one rank: the buckets follow each other
    else
      o.ranges.push_back({own.begin, own.end, b.shard_offset});
  }
  return o;
}

OwnedSnapshot::OwnedSnapshot(int64_t size, bool pinned) : size_(size), pinned_(pinned) {
  const size_t bytes = sizeof(float) * 3 * static_cast<size_t>(std::max<int64_t>(size, 1));
  data_ = pinned ? static_cast<float*>(cuda_malloc_host(bytes, "checkpoint snapshot"))
                 : static_cast<float*>(::operator new(bytes));
}

OwnedSnapshot::~OwnedSnapshot() {
  if (pinned_)
    cuda_free_host(data_);
  else
    ::operator delete(data_);
}

CheckpointWriter::CheckpointWriter(const Communicator& world, std::string checkpoints_dir,
                                   int keep, CheckpointMeta meta,
                                   std::vector<std::vector<StoredPiece>> pieces_by_rank,
                                   int64_t buffer_size, bool pinned)
    : world_(world),
      checkpoints_dir_(std::move(checkpoints_dir)),
      keep_(keep),
      meta_(std::move(meta)),
      pieces_by_rank_(std::move(pieces_by_rank)),
      buffer_size_(buffer_size),
      pinned_(pinned) {
  SAMBAY_CHECK(static_cast<int64_t>(pieces_by_rank_.size()) == meta_.placement.world_size() &&
                   world_.size == meta_.placement.world_size(),
               "checkpoint writer: pieces of {} ranks, a layout of {}, a world of {}",
               pieces_by_rank_.size(), meta_.placement.world_size(), world_.size);
}

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

double CheckpointWriter::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void CheckpointWriter::write(Pending& p) {
  const double t0 = now();
  try {
    p.result = write_rank_file(p.tmp_dir, meta_,
                               {world_.rank, &pieces_by_rank_[world_.rank], p.params, p.adam_m,
                                p.adam_v});
    if (world_.rank == 0) write_checkpoint_index(p.tmp_dir, meta_, pieces_by_rank_);
  } catch (const Error& e) {
    p.error = e.what();
  } catch (const std::bad_alloc&) {
    p.error = "out of host memory";
  } catch (const std::exception& e) {
    p.error = fmt::format("internal error: {}", e.what());
  }
  p.write_s = now() - t0;
}

std::vector<CheckpointCommit> CheckpointWriter::save(const TrainState& state, bool async,
                                                     const Fill& fill,
                                                     std::span<const float> live_m,
                                                     std::span<const float> live_v) {
  std::vector<CheckpointCommit> done;
  if (std::optional<CheckpointCommit> c = finish()) done.push_back(std::move(*c));
  meta_.state = state;
  Pending p;
  p.step = state.step;
  p.async = async;
  p.started = now();
  p.tmp_dir = (std::filesystem::path(checkpoints_dir_) / (step_dir_name(state.step) + ".tmp"))
                  .string();
  // Stage 1: the directory exists before any rank writes into it.
  if (world_.rank == 0) {
    // Weights and both moments of every parameter, once.
    const double tensor_bytes = 12.0 * double(build_param_layout(meta_.model).total);
    try {
      begin_checkpoint(checkpoints_dir_, state.step, tensor_bytes);
    } catch (const Error& e) {
      const std::vector<StepDir> kept = list_checkpoints(checkpoints_dir_);
      fail("the checkpoint of step {} was not written: {}; the checkpoints before it are "
           "untouched ({})",
           state.step, e.what(),
           kept.empty() ? std::string("there are none yet") : "the newest: " + kept.front().path);
    }
  }
  barrier(world_);
  if (!snapshot_) snapshot_ = std::make_unique<OwnedSnapshot>(buffer_size_, pinned_);
  const bool direct = !async && !live_m.empty();
  fill(snapshot_->params(), direct ? nullptr : snapshot_->adam_m(),
       direct ? nullptr : snapshot_->adam_v());
  const size_t n = static_cast<size_t>(buffer_size_);
  p.params = {snapshot_->params(), n};
  p.adam_m = direct ? live_m : std::span<const float>(snapshot_->adam_m(), n);
  p.adam_v = direct ? live_v : std::span<const float>(snapshot_->adam_v(), n);
  pending_ = std::move(p);
  if (async) {
    written_ = false;
    thread_ = std::thread([this] {
      write(*pending_);
      written_ = true;
    });
    return done;
  }
  write(*pending_);
  done.push_back(commit());
  barrier(world_);  // no rank moves on (or exits) before the checkpoint is complete
  return done;
}

std::optional<CheckpointCommit> CheckpointWriter::poll() {
  if (!pending_) return std::nullopt;
  // The largest "not yet written" flag over the ranks: 0 once every rank has written.
  const bool everywhere = all_reduce_scalar(world_, written_ ? 0.0 : 1.0, ReduceOp::max) == 0;
  if (!everywhere) return std::nullopt;
  return commit();
}

std::optional<CheckpointCommit> CheckpointWriter::finish() {
  if (!pending_) return std::nullopt;
  return commit();
}

CheckpointCommit CheckpointWriter::commit() {
  if (thread_.joinable()) thread_.join();
  Pending p = std::move(*pending_);
  pending_.reset();
  auto failed = [&](const std::string& why) {
    abandon_checkpoint(checkpoints_dir_, p.step);
    const std::vector<StepDir> kept = list_checkpoints(checkpoints_dir_);
    fail("the checkpoint of step {} was not written: {}; the checkpoints before it are "
         "untouched ({})",
         p.step, why,
         kept.empty() ? std::string("there are none yet") : "the newest: " + kept.front().path);
  };
  // A rank whose write failed ends the job here (report_fatal_error aborts the others).
  if (!p.error.empty()) failed(p.error);
  // Every rank's file size and checksum, for rank 0's manifest (exact in doubles).
  const double mine[2] = {double(p.result.bytes), double(p.result.content_crc32c)};
  std::vector<double> all(2 * static_cast<size_t>(world_.size));
  all_gather(world_, mine, all.data(), 2, DType::f64);
  CheckpointCommit c;
  c.step = p.step;
  c.async = p.async;
  if (world_.rank != 0) return c;
  std::vector<RankFileResult> files(world_.size);
  for (int r = 0; r < world_.size; ++r)
    files[r] = {int64_t(all[2 * r]), uint32_t(all[2 * r + 1])};
  SaveResult saved;
  try {
    saved = commit_checkpoint(checkpoints_dir_, meta_, files, keep_);
  } catch (const Error& e) {
    failed(e.what());
  }
  c.dir = saved.dir;
  c.bytes = saved.bytes;
  c.removed = saved.removed;
  c.write_s = p.write_s;
  c.total_s = now() - p.started;
  return c;
}

}  // namespace sambay
