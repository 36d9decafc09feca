// Data parallelism under mpirun (2 and 4 ranks) against the single-rank computation, which
// every rank also runs locally on the whole global batch:
//  - the loss and every parameter's gradient after the bucketed reduce-scatter (fp64 to 1e-10,
//    fp32 to 1e-5 relative: fp32 sums the ranks' partial gradients in another order);
//  - the sharded AdamW (reduce-scatter, global norm, clipping, per-group lr / weight decay cut
//    at shard boundaries, parameter all-gather) against the unsharded optimizer.
#include "core/model.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "parallel/data_parallel.h"
#include "tests/model_test_data.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace sambay {
namespace {

Communicator world() { return make_communicator(MPI_COMM_WORLD, CommBackend::mpi, "world"); }

template <typename T>
void expect_dp_gradients_match_single_rank(const std::string& preset, double tolerance) {
  const Communicator c = world();
  constexpr int64_t B = 2, L = 8, accum = 2;
  const ModelConfig mc = model_preset(preset);
  const int64_t micro_batches = c.size * accum;  // the global batch, in global order
  std::vector<testing::TokenBatch> batch;
  for (int64_t m = 0; m < micro_batches; ++m)
    batch.push_back(testing::random_token_batch(mc.vocab, B, L, 77 + m));

  // Single rank: every micro-batch, scaled by 1 / (valid targets of the global batch).
  Model<T> ref = make_model<T>(mc, 5);
  Activations<T> ref_acts = plan_activations(ref, B, L, false);
  int64_t valid = 0;
  for (const testing::TokenBatch& mb : batch) valid += testing::valid_targets(mb.targets);
  double ref_loss = 0;
  for (const testing::TokenBatch& mb : batch) {
    ref_loss +=
        model_forward(ref, ref_acts, mb.tokens.data(), mb.targets.data(), mb.doc.data()).loss_sum;
    model_backward(ref, ref_acts, mb.tokens.data(), mb.targets.data(), mb.doc.data(),
                   T(1) / T(valid));
  }
  ref_loss /= valid;

  // Data parallel: this rank's contiguous slice of micro-batches, the valid count all-reduced.
  Model<T> model = make_model<T>(mc, 5);
  Activations<T> acts = plan_activations(model, B, L, false);
  int64_t local_valid = 0;
  for (int64_t k = 0; k < accum; ++k) local_valid += testing::valid_targets(batch[c.rank * accum + k].targets);
  const int64_t global_valid = int64_t(all_reduce_scalar(c, double(local_valid)));
  EXPECT_EQ(global_valid, valid);
  double loss_sum = 0;
  for (int64_t k = 0; k < accum; ++k) {
    const testing::TokenBatch& mb = batch[c.rank * accum + k];
    loss_sum +=
        model_forward(model, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data()).loss_sum;
    model_backward(model, acts, mb.tokens.data(), mb.targets.data(), mb.doc.data(),
                   T(1) / T(global_valid));
  }
  const double loss = all_reduce_scalar(c, loss_sum) / global_valid;
  EXPECT_LE(std::abs(loss - ref_loss), tolerance * std::abs(ref_loss))
      << preset << ": loss " << loss << " vs single rank " << ref_loss;

  // Reduce-scatter in buckets of a prime size (so the last bucket is padded), then gather the
  // shards back to compare every gradient.
  const ShardLayout s = make_shard_layout(model.layout.total, 997, c.size, c.rank);
  std::vector<T> shard(s.shard_size), staging;
  reduce_scatter_buckets(c, s, model.grads.data(), shard.data(), staging);
  std::vector<T> reduced(model.layout.total, T(NAN));
  for (const ShardBucket& b : s.buckets) {
    const FlatRange own = owned_range(s, b, c.rank);
    std::copy(shard.begin() + b.shard_offset,
              shard.begin() + b.shard_offset + (own.end - own.begin), reduced.begin() + own.begin);
  }
  all_gather_buckets(c, s, reduced.data(), staging);
  testing::expect_gradients_match(model.layout, reduced, ref.grads, tolerance, preset);
}

TEST(DataParallelGradients, Fp64MatchSingleRankTinySambayDA) {
  expect_dp_gradients_match_single_rank<double>("tiny-sambay-da", 1e-10);
}
TEST(DataParallelGradients, Fp64MatchSingleRankTinySambaYoco) {
  expect_dp_gradients_match_single_rank<double>("tiny-samba-yoco", 1e-10);
}
TEST(DataParallelGradients, Fp32MatchSingleRankTinySambayDA) {
  expect_dp_gradients_match_single_rank<float>("tiny-sambay-da", 1e-5);
}

// Gradients that sum exactly in fp32 in any order (multiples of 2^-8 below 2^7), so the
// reduced gradient is bit-identical to the single-rank sum and any difference in the
// parameters comes from the optimizer's sharding alone.
std::vector<float> rank_gradient(int64_t n, int rank, int step) {
  const std::vector<double> u = testing::random_uniform(n, 1000 * step + rank, -64, 64);
  std::vector<float> g(n);
  for (int64_t i = 0; i < n; ++i) g[i] = float(std::floor(u[i])) / 256.0f;
  return g;
}

// Groups of odd sizes with distinct multipliers: shard pieces start and end inside groups.
std::vector<ParamGroup> test_groups() {
  const int64_t sizes[] = {5, 13, 7, 1, 29, 11, 40};
  const double lr[] = {1, 0.5, 2, 1, 0.25, 3, 0.7};
  const double wd[] = {1, 0, 1, 0, 1, 0.5, 0};
  std::vector<ParamGroup> g;
  int64_t off = 0;
  for (int i = 0; i < 7; ++i) {
    g.push_back({off, sizes[i], lr[i], wd[i]});
    off += sizes[i];
  }
  return g;
}

class ShardedOptimizer : public ::testing::TestWithParam<int64_t> {};

TEST_P(ShardedOptimizer, MatchesUnshardedAdamW) {
  const Communicator c = world();
  const std::vector<ParamGroup> groups = test_groups();
  const int64_t total = groups.back().offset + groups.back().numel;
  const AdamWHyper base{1e-2, 0.9, 0.95, 1e-8, 0.1};
  const std::vector<double> init = testing::random_normal(total, 3, 0.5);

  std::vector<float> ref(init.begin(), init.end()), ref_m(total, 0), ref_v(total, 0);
  std::vector<float> params = ref;
  ShardedAdamW opt = make_sharded_adamw(c, total, groups, GetParam());

  for (int step = 1; step <= 3; ++step) {
    // Unsharded: the summed gradient, global norm, clip to half the norm, AdamW per group.
    std::vector<float> sum(total, 0.0f);
    for (int r = 0; r < c.size; ++r) {
      const std::vector<float> g = rank_gradient(total, r, step);
      for (int64_t i = 0; i < total; ++i) sum[i] += g[i];
    }
    const double ref_norm = global_grad_norm({std::span<const float>(sum)});
    const double max_norm = 0.5 * ref_norm;
    const double coef = clip_coefficient(ref_norm, max_norm);
    for (float& g : sum) g *= float(coef);
    for (const ParamGroup& pg : groups) {
      AdamWHyper h = base;
      h.lr *= pg.lr_mult;
      h.weight_decay *= pg.wd_mult;
      adamw_update(ref.data() + pg.offset, sum.data() + pg.offset, ref_m.data() + pg.offset,
                   ref_v.data() + pg.offset, pg.numel, h, step);
    }

    // Sharded.
    const std::vector<float> mine = rank_gradient(total, c.rank, step);
    reduce_gradients(opt, mine.data());
    const double norm = sharded_grad_norm(opt);
    EXPECT_NEAR(norm, ref_norm, 1e-13 * ref_norm) << "step " << step;
    sharded_adamw_step(opt, params.data(), clip_coefficient(norm, max_norm), base, step);

    // Every rank holds every parameter (the all-gather), equal to the unsharded update; the
    // moments of the owned values equal the unsharded moments.
    int64_t wrong = 0, first = -1;
    for (int64_t i = 0; i < total; ++i)
      if (std::abs(params[i] - ref[i]) > 1e-6 * std::abs(ref[i]) + 1e-12 && wrong++ == 0) first = i;
    EXPECT_EQ(wrong, 0) << "step " << step << ": first wrong parameter " << first << " on rank "
                        << c.rank << ": " << (first >= 0 ? params[first] : 0) << " vs "
                        << (first >= 0 ? ref[first] : 0);
    for (const ShardBucket& b : opt.layout.buckets) {
      const FlatRange own = owned_range(opt.layout, b, c.rank);
      for (int64_t i = own.begin; i < own.end; ++i) {
        const int64_t k = b.shard_offset + (i - own.begin);
        EXPECT_NEAR(opt.m[k], ref_m[i], 1e-6 * std::abs(ref_m[i]) + 1e-12) << "m " << i;
        EXPECT_NEAR(opt.v[k], ref_v[i], 1e-6 * std::abs(ref_v[i]) + 1e-12) << "v " << i;
      }
    }
  }
}

TEST_P(ShardedOptimizer, OwnsEachValueOnExactlyOneRank) {
  const Communicator c = world();
  const std::vector<ParamGroup> groups = test_groups();
  const int64_t total = groups.back().offset + groups.back().numel;
  const ShardedAdamW opt = make_sharded_adamw(c, total, groups, GetParam());
  // Each rank counts the values its segments cover; summed over ranks every value counts once,
  // and no segment crosses a group boundary.
  std::vector<double> owned(total, 0.0);
  for (const ShardSegment& s : opt.segments) {
    const ParamGroup& g = groups[s.group];
    EXPECT_GE(s.flat, g.offset);
    EXPECT_LE(s.flat + s.n, g.offset + g.numel);
    for (int64_t i = s.flat; i < s.flat + s.n; ++i) owned[i] += 1;
  }
  all_reduce(c, owned.data(), total);
  for (int64_t i = 0; i < total; ++i) EXPECT_EQ(owned[i], 1.0) << "value " << i;
}

INSTANTIATE_TEST_SUITE_P(BucketSizes, ShardedOptimizer, ::testing::Values(1, 12, 37, 4096),
                         [](const ::testing::TestParamInfo<int64_t>& info) {
                           return "bucket" + std::to_string(info.param);
                         });

}  // namespace
}  // namespace sambay
