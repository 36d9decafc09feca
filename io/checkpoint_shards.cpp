#include "io/checkpoint_shards.h"

#include "core/check.h"

#include <fmt/format.h>

#include <algorithm>

namespace sambay {

namespace {

// Boxes of `shape` (row-major) that cover the flat range [a, b) exactly, each with its first
// value's flat index: at most two per dimension beyond the last, plus one.
void range_boxes(const std::vector<int64_t>& shape, std::vector<int64_t>& fixed, size_t d,
                 int64_t a, int64_t b, int64_t base, std::vector<std::pair<Box, int64_t>>& out) {
  if (a >= b) return;
  const size_t nd = shape.size();
  int64_t inner = 1;
  for (size_t k = d + 1; k < nd; ++k) inner *= shape[k];
  auto emit = [&](int64_t row_begin, int64_t rows) {
    Box box{std::vector<int64_t>(nd, 0), shape};
    for (size_t k = 0; k < d; ++k) box.offset[k] = fixed[k], box.shape[k] = 1;
    box.offset[d] = row_begin, box.shape[d] = rows;
    out.emplace_back(std::move(box), base + row_begin * inner);
  };
  if (d + 1 == nd) {
    emit(a, b - a);
    return;
  }
  int64_t r0 = a / inner;
  if (a % inner != 0) {  // the head: part of row r0
    const int64_t end = std::min(b, (r0 + 1) * inner);
    fixed[d] = r0;
    range_boxes(shape, fixed, d + 1, a - r0 * inner, end - r0 * inner, base + r0 * inner, out);
    a = end, ++r0;
    if (a >= b) return;
  }
  const int64_t r1 = b / inner;
  if (r1 > r0) emit(r0, r1 - r0);
  if (r1 * inner < b) {  // the tail: part of row r1
    fixed[d] = r1;
    range_boxes(shape, fixed, d + 1, 0, b - r1 * inner, base + r1 * inner, out);
  }
}

}  // namespace

RankOwnership whole_buffer_ownership(int64_t total) {
  RankOwnership o;
  if (total > 0) o.ranges.push_back({0, total, 0});
  o.buffer_size = total;
  return o;
}

void append_range_pieces(const ParamSpec& full, const ParamSpec& shard, int param, int tp,
                         int tp_rank, int64_t begin, int64_t end, int64_t pos,
                         std::vector<StoredPiece>& out) {
  SAMBAY_CHECK(full.name == shard.name, "shard layout does not match: '{}' vs '{}'", full.name,
               shard.name);
  SAMBAY_CHECK(begin >= shard.offset && end <= shard.offset + shard.numel && begin <= end,
               "{}: range [{}, {}) outside the parameter's [{}, {})", shard.name, begin, end,
               shard.offset, shard.offset + shard.numel);
  const int64_t rows = shard.shape[0], inner = rows > 0 ? shard.numel / rows : 0;
  // Runs of shard rows that sit together in the global tensor: [shard row, rows, global row).
  struct RowRun {
    int64_t shard_row, rows, global_row;
  };
  std::vector<RowRun> runs;
  int64_t col_shift = 0;
  if (full.tp_dim == 0 && tp > 1) {
    SAMBAY_CHECK(!full.tp_parts.empty(), "{}: split along dimension 0 without parts", full.name);
    int64_t part_start = 0, shard_row = 0;
    for (int64_t part : full.tp_parts) {
      const int64_t n = part / tp;
      runs.push_back({shard_row, n, part_start + tp_rank * n});
      part_start += part, shard_row += n;
    }
  } else {
    runs.push_back({0, rows, 0});
    if (full.tp_dim == 1 && tp > 1) col_shift = tp_rank * (full.shape[1] / tp);
  }
  const int64_t a = begin - shard.offset, b = end - shard.offset;
  std::vector<int64_t> fixed(shard.shape.size(), 0);
  for (const RowRun& run : runs) {
    const int64_t lo = std::max(a, run.shard_row * inner);
    const int64_t hi = std::min(b, (run.shard_row + run.rows) * inner);
    if (lo >= hi) continue;
    std::vector<std::pair<Box, int64_t>> boxes;
    range_boxes(shard.shape, fixed, 0, lo, hi, 0, boxes);
    for (auto& [box, flat] : boxes) {
      box.offset[0] += run.global_row - run.shard_row;
      if (col_shift) box.offset[1] += col_shift;
      out.push_back({param, std::move(box), pos + (flat - a)});
    }
  }
}

std::vector<StoredPiece> owned_pieces(const ParamLayout& full, const ParamLayout& shard,
                                      const RankOwnership& owner, bool replicated_too) {
  SAMBAY_CHECK(full.params.size() == shard.params.size(), "shard layout has {} tensors, not {}",
               shard.params.size(), full.params.size());
  std::vector<StoredPiece> out;
  // Both lists are in flat order: walk them together.
  size_t r = 0;
  for (size_t i = 0; i < shard.params.size(); ++i) {
    const ParamSpec& s = shard.params[i];
    // Whole tensors are the same on every TP rank: TP rank 0 stores them.
    if (full.params[i].tp_dim < 0 && owner.tp_rank != 0 && !replicated_too) continue;
    const int64_t p0 = s.offset, p1 = s.offset + s.numel;
    while (r < owner.ranges.size() && owner.ranges[r].end <= p0) ++r;
    for (size_t k = r; k < owner.ranges.size() && owner.ranges[k].begin < p1; ++k) {
      const OwnedRange& o = owner.ranges[k];
      const int64_t lo = std::max(p0, o.begin), hi = std::min(p1, o.end);
      if (lo < hi)
        append_range_pieces(full.params[i], s, int(i), owner.tp, owner.tp_rank, lo, hi,
                            o.pos + (lo - o.begin), out);
    }
  }
  return out;
}

std::vector<StoredPiece> shard_tensor_pieces(const ParamLayout& full, const ParamLayout& shard,
                                             int param, int tp, int tp_rank) {
  const ParamSpec& s = shard.params[param];
  std::vector<StoredPiece> out;
  append_range_pieces(full.params[param], s, param, tp, tp_rank, s.offset, s.offset + s.numel,
                      s.offset, out);
  return out;
}

std::string piece_dataset(const std::string& tensor_path, int k) {
  return k == 0 ? tensor_path : fmt::format("{}#{}", tensor_path, k);
}

}  // namespace sambay
