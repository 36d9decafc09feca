#include "parallel/data_parallel.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>

namespace sambay {

std::vector<ParamGroup> param_groups(const ParamLayout& layout, const MupConfig& mup) {
  std::vector<ParamGroup> groups;
  for (const ParamSpec& p : layout.params)
    groups.push_back({p.offset, p.numel, mup_lr_multiplier(p.cls, mup),
                      mup_weight_decay_multiplier(p.cls, mup), p.tp_dim < 0});
  return groups;
}

ShardLayout make_shard_layout(int64_t total, int64_t bucket_size, int ranks, int rank) {
  SAMBAY_CHECK(total >= 0, "shard layout: negative total {}", total);
  SAMBAY_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "shard layout: rank {} of {}", rank, ranks);
  SAMBAY_CHECK(bucket_size > 0, "shard layout: bucket size must be positive, got {}", bucket_size);
  ShardLayout s;
  s.total = total;
  s.ranks = ranks;
  s.rank = rank;
  const int64_t bucket = (bucket_size + ranks - 1) / ranks * ranks;
  for (int64_t begin = 0; begin < total; begin += bucket) {
    const int64_t size = std::min(bucket, total - begin);
    const int64_t piece = (size + ranks - 1) / ranks;
    s.buckets.push_back({begin, size, piece, s.shard_size});
    s.shard_size += piece;
  }
  return s;
}

FlatRange owned_range(const ShardLayout&, const ShardBucket& b, int owner) {
  return {b.begin + std::min(b.size, owner * b.piece),
          b.begin + std::min(b.size, (owner + 1) * b.piece)};
}

namespace {

// A bucket that divides evenly is reduced straight from (and gathered into) the flat buffer;
// the padded last bucket goes through a zero-padded copy.
bool padded(const ShardLayout& s, const ShardBucket& b) { return b.piece * s.ranks != b.size; }

}  // namespace

template <typename T>
void reduce_scatter_buckets(const Communicator& c, const ShardLayout& s, const T* full, T* shard,
                            std::vector<T>& staging) {
  SAMBAY_CHECK(c.size == s.ranks && c.rank == s.rank,
               "group '{}' (rank {} of {}) does not match the shard layout (rank {} of {})", c.name,
               c.rank, c.size, s.rank, s.ranks);
  for (const ShardBucket& b : s.buckets) {
    const T* send = full + b.begin;
    if (padded(s, b)) {
      staging.assign(b.piece * s.ranks, T(0));
      std::copy(full + b.begin, full + b.begin + b.size, staging.begin());
      send = staging.data();
    }
    reduce_scatter(c, send, shard + b.shard_offset, b.piece, dtype_of<T>(), ReduceOp::sum);
  }
}

template <typename T>
void all_gather_buckets(const Communicator& c, const ShardLayout& s, T* full,
                        std::vector<T>& staging) {
  SAMBAY_CHECK(c.size == s.ranks && c.rank == s.rank,
               "group '{}' (rank {} of {}) does not match the shard layout (rank {} of {})", c.name,
               c.rank, c.size, s.rank, s.ranks);
  for (const ShardBucket& b : s.buckets) {
    if (!padded(s, b)) {
      all_gather(c, full + b.begin + s.rank * b.piece, full + b.begin, b.piece, dtype_of<T>());
      continue;
    }
    staging.assign(b.piece * s.ranks, T(0));
    const FlatRange own = owned_range(s, b, s.rank);
    std::copy(full + own.begin, full + own.end, staging.begin() + s.rank * b.piece);
    all_gather(c, staging.data() + s.rank * b.piece, staging.data(), b.piece, dtype_of<T>());
    std::copy(staging.begin(), staging.begin() + b.size, full + b.begin);
  }
}

template <typename T>
double shard_sum_of_squares(const ShardLayout& s, const T* shard) {
  // Fixed blocks within each owned run, partial sums added in order.
  constexpr int64_t kBlock = 1 << 14;
  struct Block {
    int64_t start, n;
  };
  std::vector<Block> blocks;
  for (const ShardBucket& b : s.buckets) {
    const FlatRange own = owned_range(s, b, s.rank);
    for (int64_t i = 0; i < own.end - own.begin; i += kBlock)
      blocks.push_back({b.shard_offset + i, std::min(kBlock, own.end - own.begin - i)});
  }
  std::vector<double> partial(blocks.size(), 0.0);
#pragma omp parallel for
  for (size_t k = 0; k < blocks.size(); ++k) {
    double sum = 0;
    for (int64_t i = blocks[k].start; i < blocks[k].start + blocks[k].n; ++i)
      sum += double(shard[i]) * double(shard[i]);
    partial[k] = sum;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

std::vector<ShardSegment> shard_segments(const ShardLayout& layout,
                                         const std::vector<ParamGroup>& groups) {
  int64_t expect = 0;
  for (const ParamGroup& g : groups) {
    SAMBAY_CHECK(g.offset == expect && g.numel >= 0,
                 "parameter groups must tile the buffer in order: a group starts at {}, "
                 "expected {}",
                 g.offset, expect);
    expect += g.numel;
  }
  SAMBAY_CHECK(expect == layout.total, "parameter groups cover {} values of {}", expect,
               layout.total);
  // Buckets and groups both run in flat order, so one pass cuts the owned ranges at group
  // boundaries.
  std::vector<ShardSegment> segments;
  size_t gi = 0;
  for (const ShardBucket& b : layout.buckets) {
    const FlatRange own = owned_range(layout, b, layout.rank);
    for (int64_t pos = own.begin; pos < own.end;) {
      while (groups[gi].offset + groups[gi].numel <= pos) ++gi;
      const int64_t end = std::min(own.end, groups[gi].offset + groups[gi].numel);
      segments.push_back({pos, b.shard_offset + (pos - own.begin), end - pos, int(gi)});
      pos = end;
    }
  }
  return segments;
}

ShardedAdamW make_sharded_adamw(const Communicator& dp, int64_t total,
                                std::vector<ParamGroup> groups, int64_t bucket_size) {
  ShardedAdamW opt;
  opt.comm = &dp;
  opt.layout = make_shard_layout(total, bucket_size, dp.size, dp.rank);
  opt.groups = std::move(groups);
  opt.segments = shard_segments(opt.layout, opt.groups);
  opt.grad.assign(opt.layout.shard_size, 0.0f);
  opt.m.assign(opt.layout.shard_size, 0.0f);
  opt.v.assign(opt.layout.shard_size, 0.0f);
  return opt;
}

void reduce_gradients(ShardedAdamW& opt, const float* grads) {
  reduce_scatter_buckets(*opt.comm, opt.layout, grads, opt.grad.data(), opt.staging);
}

double sharded_grad_norm(const ShardedAdamW& opt, const Communicator* tp) {
  double local = shard_sum_of_squares(opt.layout, opt.grad.data());
  if (tp && tp->rank != 0)
    for (const ShardSegment& s : opt.segments)
      if (opt.groups[s.group].whole_on_tp_ranks)
        for (int64_t i = s.shard; i < s.shard + s.n; ++i)
          local -= double(opt.grad[i]) * double(opt.grad[i]);
  double sum = all_reduce_scalar(*opt.comm, local, ReduceOp::sum);
  if (tp) sum = all_reduce_scalar(*tp, sum, ReduceOp::sum);
  return std::sqrt(sum);
}

void sharded_adamw_step(ShardedAdamW& opt, float* params, double clip_coef, const AdamWHyper& base,
                        int64_t step) {
  if (clip_coef != 1.0) {
    const float coef = static_cast<float>(clip_coef);
    for (float& g : opt.grad) g *= coef;
  }
  for (const ShardSegment& s : opt.segments) {
    const ParamGroup& g = opt.groups[s.group];
    AdamWHyper h = base;
    h.lr *= g.lr_mult;
    h.weight_decay *= g.wd_mult;
    adamw_update(params + s.flat, opt.grad.data() + s.shard, opt.m.data() + s.shard,
                 opt.v.data() + s.shard, s.n, h, step);
  }
  all_gather_buckets(*opt.comm, opt.layout, params, opt.staging);
}

#define SAMBAY_INSTANTIATE(T)                                                                    \
  template void reduce_scatter_buckets<T>(const Communicator&, const ShardLayout&, const T*, T*, \
                                          std::vector<T>&);                                      \
  template void all_gather_buckets<T>(const Communicator&, const ShardLayout&, T*,               \
                                      std::vector<T>&);                                          \
  template double shard_sum_of_squares<T>(const ShardLayout&, const T*);
SAMBAY_INSTANTIATE(float)
SAMBAY_INSTANTIATE(double)
#undef SAMBAY_INSTANTIATE

}  // namespace sambay
