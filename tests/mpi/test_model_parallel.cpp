// Tensor, sequence, context and data parallelism under mpirun against the single-rank model.
// Every rank also runs the single-rank model on the whole global batch; then the parallel
// layout runs its share (a DP slice of the micro-batches, a CP slice of every sequence, a TP
// shard of every tensor). The loss summed over the ranks and every gradient, summed over data
// and context ranks and gathered over tensor ranks into whole tensors, must equal the
// single-rank ones: fp64 to 1e-10 relative, fp32 to 1e-5 (fp32 sums in another order).
// Test names carry the world size they need; CMake runs each program with a filter per size.
#include "core/model.h"
#include "parallel/context_parallel.h"
#include "parallel/process_grid.h"
#include "tests/test_util.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace sambay {
namespace {

struct Layout {
  int tp = 1, cp = 1;
  bool sp = false;
};

// A micro-batch [B, L]: random tokens, a quarter of the targets ignored, and documents that
// end at different places in each row (so document boundaries fall inside and at the edges
// of context-parallel chunks).
struct MicroBatch {
  std::vector<int32_t> tokens, targets, doc;
};

MicroBatch make_micro_batch(int64_t vocab, int64_t B, int64_t L, uint64_t seed) {
  const std::vector<double> tok = testing::random_uniform(B * L, seed, 0, double(vocab));
  const std::vector<double> tgt = testing::random_uniform(B * L, seed + 1000, 0, double(vocab));
  const std::vector<double> drop = testing::random_uniform(B * L, seed + 2000, 0, 1);
  MicroBatch mb;
  for (int64_t i = 0; i < B * L; ++i) {
    const int64_t b = i / L, t = i % L;
    mb.tokens.push_back(int32_t(tok[i]));
    mb.targets.push_back(drop[i] < 0.25 ? -1 : int32_t(tgt[i]));
    // Row 0: one boundary at L / 2 (a chunk edge for CP2 and CP4: 4 and 8 chunks of 6 and 3);
    // row 1: boundaries at 3 (a chunk edge for CP4, inside a chunk for CP2) and L - 5 (inside).
    mb.doc.push_back(b % 2 == 0 ? int32_t(t >= L / 2) : int32_t(t >= 3) + int32_t(t >= L - 5));
  }
  return mb;
}

// A context-parallel rank's positions of a [B, L] array (its two chunks of every sample).
std::vector<int32_t> cp_slice(const std::vector<int32_t>& a, int64_t B, int64_t L, int rank,
                              int cp) {
  std::vector<int32_t> out(B * L / cp);
  take_context_chunks(a.data(), out.data(), B, L, rank, cp);
  return out;
}

int64_t valid_targets(const std::vector<int32_t>& targets) {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t >= 0; });
}

// The config a test runs: a tiny preset with enough heads for two TP ranks (differential
// attention keeps head pairs on one rank).
ModelConfig test_config(const std::string& preset) {
  ModelConfig c = model_preset(preset);
  if (c.differential) c.n_heads = 8, c.n_kv_heads = 4;
  return c;
}

template <typename T>
void expect_layout_matches_single_rank(const std::string& preset, const Layout& layout,
                                       double tolerance) {
  ProcessGrid grid = make_process_grid(layout.tp, layout.cp);
  const Communicator tp = make_communicator(grid.tp, CommBackend::mpi, "tp");
  const Communicator cp = make_communicator(grid.cp, CommBackend::mpi, "cp");
  const Communicator dp_cp = make_communicator(grid.dp_cp, CommBackend::mpi, "dp_cp");
  const ModelConfig mc = test_config(preset);
  constexpr int64_t B = 2, L = 24, accum = 2;
  const int dp = grid.shape.dp;
  std::vector<MicroBatch> batch;
  for (int64_t m = 0; m < dp * accum; ++m) batch.push_back(make_micro_batch(mc.vocab, B, L, 31 + m));
  int64_t valid = 0;
  for (const MicroBatch& mb : batch) valid += valid_targets(mb.targets);

  Model<T> ref = make_model<T>(mc, 5);
  Activations<T> ref_acts = plan_activations(ref, B, L, false);
  double ref_loss = 0;
  for (const MicroBatch& mb : batch) {
    ref_loss +=
        model_forward(ref, ref_acts, mb.tokens.data(), mb.targets.data(), mb.doc.data()).loss_sum;
    model_backward(ref, ref_acts, mb.tokens.data(), mb.targets.data(), mb.doc.data(),
                   T(1) / T(valid));
  }

  ModelSplit split;
  split.tp = &tp, split.sequence_parallel = layout.sp, split.cp = &cp;
  Model<T> model = make_model_shard<T>(mc, 5, split);
  const int64_t Lc = L / layout.cp;
  Activations<T> acts = plan_activations(model, B, Lc, false);
  double loss_sum = 0;
  for (int64_t k = 0; k < accum; ++k) {
    const MicroBatch& mb = batch[grid.coords.dp * accum + k];
    const int r = grid.coords.cp, n = layout.cp;
    const std::vector<int32_t> tokens = cp_slice(mb.tokens, B, L, r, n);
    const std::vector<int32_t> targets = cp_slice(mb.targets, B, L, r, n);
    const std::vector<int32_t> doc = cp_slice(mb.doc, B, L, r, n);
    loss_sum += model_forward(model, acts, tokens.data(), targets.data(), doc.data()).loss_sum;
    model_backward(model, acts, tokens.data(), targets.data(), doc.data(), T(1) / T(valid));
  }
  // The loss of a TP group is the same on its ranks: sum over data and context ranks.
  EXPECT_LE(std::abs(all_reduce_scalar(dp_cp, loss_sum) - ref_loss), tolerance * ref_loss)
      << preset << ": loss differs from the single-rank run";

  reduce_tensor_parallel_grads(model);
  all_reduce(dp_cp, model.grads.data(), model.layout.total);
  // Whole tensors: every TP rank's shard, gathered and put back in place.
  std::vector<T> shards(model.layout.total * tp.size);
  all_gather(tp, model.grads.data(), shards.data(), model.layout.total, dtype_of<T>());
  std::vector<T> full(ref.layout.total, T(NAN));
  for (int r = 0; r < tp.size; ++r)
    unshard_params(ref.layout, model.layout, shards.data() + r * model.layout.total, full.data(),
                   tp.size, r);
  for (const ParamSpec& p : ref.layout.params) {
    double diff = 0, norm = 0;
    for (int64_t i = p.offset; i < p.offset + p.numel; ++i) {
      const double d = double(full[i]) - double(ref.grads[i]);
      diff += d * d;
      norm += double(ref.grads[i]) * double(ref.grads[i]);
    }
    EXPECT_LE(std::sqrt(diff), tolerance * std::sqrt(norm))
        << preset << " " << p.name << ": gradient differs from the single-rank run (relative "
        << std::sqrt(diff / std::max(norm, 1e-300)) << ")";
  }
}

// Every preset family: SambaY+DA (Mamba, differential SWA / full / cross attention, GMU),
// Samba+YOCO (cross-attention only), Transformer++ (RoPE, RMSNorm, plain attention) and the
// nGMU (its norm spans the TP ranks).
const char* const kPresets[] = {"tiny-sambay-da", "tiny-samba-yoco", "tiny-transformerpp",
                                "tiny-ngmu"};

// fp32 runs SambaY without differential attention: with it, the lambda vectors' gradient is a
// sum over heads that cancels about a hundredfold, so TP ranks' fp32 partial sums carry ~2e-5
// relative rounding (the single-rank fp32 run itself is 2.7e-6 from the fp64 value); fp64 checks
// those tensors to 1e-10 above.
void expect_all_presets(const Layout& layout) {
  for (const char* preset : kPresets) expect_layout_matches_single_rank<double>(preset, layout, 1e-10);
  expect_layout_matches_single_rank<float>("tiny-sambay", layout, 1e-5);
}

// Four ranks on this machine's two cores wait on each other at every collective: the layouts
// of four ranks check the full SambaY+DA model (fp64) and SambaY (fp32).
void expect_main_presets(const Layout& layout) {
  expect_layout_matches_single_rank<double>("tiny-sambay-da", layout, 1e-10);
  expect_layout_matches_single_rank<float>("tiny-sambay", layout, 1e-5);
}

TEST(ModelParallelNp2, DP2) { expect_all_presets({1, 1, false}); }
TEST(ModelParallelNp2, TP2) { expect_all_presets({2, 1, false}); }
TEST(ModelParallelNp2, TP2WithSequenceParallel) { expect_all_presets({2, 1, true}); }
TEST(ModelParallelNp2, CP2) { expect_all_presets({1, 2, false}); }
TEST(ModelParallelNp4, DP2xTP2) { expect_main_presets({2, 1, false}); }
TEST(ModelParallelNp4, DP2xTP2WithSequenceParallel) { expect_main_presets({2, 1, true}); }
TEST(ModelParallelNp4, CP4) { expect_main_presets({1, 4, false}); }
TEST(ModelParallelNp4, TP2xCP2) { expect_main_presets({2, 2, false}); }
TEST(ModelParallelNp4, TP2xCP2WithSequenceParallel) { expect_main_presets({2, 2, true}); }

}  // namespace
}  // namespace sambay
