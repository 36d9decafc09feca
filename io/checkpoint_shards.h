// Which values of a checkpoint each rank of a parallel layout stores and loads, as boxes of the
// global tensors (io/tensor_shards.h).
//
// A rank holds the TP shard of every parameter (core/param_layout.h tensor_parallel_config) in
// one flat buffer, and owns some flat ranges of it: its ZeRO pieces (parallel/data_parallel.h),
// whose AdamW moments only it keeps. In a checkpoint each rank stores, for its owned ranges, the
// weights and both moments: every value is stored once, by the rank that owns its moments, and
// no rank gathers anything. Tensors every TP rank holds whole are stored by TP rank 0 alone.
//
// A flat range of a shard tensor is, in row-major order, a few boxes of the global tensor: a
// partial first row, whole rows, a partial last row (one more split per dimension beyond two),
// and the rows of a fused tensor's parts ([q | k | v], [x | z]) land at separate places. Each
// box becomes one piece of the rank's file.
#pragma once

#include "core/param_layout.h"
#include "io/tensor_shards.h"

#include <cstdint>
#include <vector>

namespace sambay {

// Values [begin, end) of a rank's flat TP-shard buffer, kept at [pos, pos + end - begin) of the
// rank's owned-value buffers (the ZeRO shard buffers: moments, and the snapshot of weights).
struct OwnedRange {
  int64_t begin, end, pos;
};

// What one rank owns: its TP coordinates and its owned ranges, in flat order.
struct RankOwnership {
  int tp = 1, tp_rank = 0;
  std::vector<OwnedRange> ranges;
  int64_t buffer_size = 0;  // length of the owned-value buffers (>= the ranges' total)
};

// Everything of the shard buffer [0, total), kept in place: one rank of one.
RankOwnership whole_buffer_ownership(int64_t total);

// One stored box: values of parameter `param` (index in the layout) at `box` of its global
// tensor, row-major, are the buffer's values [pos, pos + box.numel()).
struct StoredPiece {
  int param;
  Box box;
  int64_t pos;
};

// The boxes of values [begin, end) of shard parameter `shard` (absolute offsets in the shard
// buffer, inside the parameter), whose values sit at `pos` onwards of some buffer. `full` is the
// parameter's spec in the whole model's layout; tp / tp_rank cut it as shard_params does.
void append_range_pieces(const ParamSpec& full, const ParamSpec& shard, int param, int tp,
                         int tp_rank, int64_t begin, int64_t end, int64_t pos,
                         std::vector<StoredPiece>& out);

// The pieces a rank stores (in the owned-value buffers' coordinates), in layout order and flat
// order within each parameter. full / shard: the whole model's and the TP shard's layouts.
// replicated_too: also the whole tensors on TP ranks other than 0 (what a rank keeps, and so
// loads, rather than what it stores).
std::vector<StoredPiece> owned_pieces(const ParamLayout& full, const ParamLayout& shard,
                                      const RankOwnership& owner, bool replicated_too = false);

// The pieces that make up the TP shard of parameter `param` (in the shard buffer's coordinates:
// pos is the flat offset in the shard buffer).
std::vector<StoredPiece> shard_tensor_pieces(const ParamLayout& full, const ParamLayout& shard,
                                             int param, int tp, int tp_rank);

// The dataset of the k-th piece (0-based, in the order written) of a tensor in one rank file:
// the tensor's path, then "<path>#<k>" (format version 3; earlier files hold one piece each).
std::string piece_dataset(const std::string& tensor_path, int k);

}  // namespace sambay
