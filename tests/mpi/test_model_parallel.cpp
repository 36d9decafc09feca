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
#include "tests/model_test_data.h"

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

// A context-parallel rank's positions of a [B, L] array (its two chunks of every sample).
std::vector<int32_t> cp_slice(const std::vector<int32_t>& a, int64_t B, int64_t L, int rank,
                              int cp) {
  std::vector<int32_t> out(B * L / cp);
  take_context_chunks(a.data(), out.data(), B, L, rank, cp);
  return out;
}


// The config a test runs: a tiny preset with enough heads for two TP ranks (differential
// attention keeps head pairs on one rank). "<preset>-untied-mup": with its own readout matrix
// (whole on every TP rank, its gradient summed over the group under SP) and μP++'s residual,
// logit and attention scales (sambay's init, so that the readout is not zero and every
// gradient carries signal).
ModelConfig test_config(std::string preset) {
  const std::string untied_mup = "-untied-mup";
  const bool variant = preset.ends_with(untied_mup);
  if (variant) preset.resize(preset.size() - untied_mup.size());
  ModelConfig c = model_preset(preset);
  if (c.differential) c.n_heads = 8, c.n_kv_heads = 4;
  if (variant) {
    c.tied_embedding = false;
    c.mup_base_width = 8, c.mup_base_depth = 4, c.mup_base_head_dim = 4;
  }
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
  std::vector<testing::TokenBatch> batch;
  for (int64_t m = 0; m < dp * accum; ++m) batch.push_back(testing::random_token_batch(mc.vocab, B, L, 31 + m));
  int64_t valid = 0;
  for (const testing::TokenBatch& mb : batch) valid += testing::valid_targets(mb.targets);

  Model<T> ref = make_model<T>(mc, 5);
  Activations<T> ref_acts = plan_activations(ref, B, L, false);
  double ref_loss = 0;
  for (const testing::TokenBatch& mb : batch) {
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
    const testing::TokenBatch& mb = batch[grid.coords.dp * accum + k];
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
  testing::expect_gradients_match(ref.layout, full, ref.grads, tolerance, preset);
}

// Every preset family: SambaY+DA (Mamba, differential SWA / full / cross attention, GMU),
// Samba+YOCO (cross-attention only), Transformer++ (RoPE, RMSNorm, plain attention), the
// nGMU (its norm spans the TP ranks), and SambaY+DA with an untied head under μP++.
const char* const kPresets[] = {"tiny-sambay-da", "tiny-samba-yoco", "tiny-transformerpp",
                                "tiny-ngmu", "tiny-sambay-da-untied-mup"};

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

// Sequence parallelism keeps the residual stream, the norms and the loss rows of one TP rank
// only: the planned activations shrink (by the TP degree for those tensors; the gathered region
// input and the TP regions' own tensors stay whole).
TEST(ModelParallelNp2, SequenceParallelPlansLessActivationMemory) {
  ProcessGrid grid = make_process_grid(2, 1);
  const Communicator tp = make_communicator(grid.tp, CommBackend::mpi, "tp");
  const ModelConfig mc = test_config("tiny-sambay-da");
  ModelSplit split;
  split.tp = &tp;
  const Model<double> tp_model = make_model_shard<double>(mc, 5, split);
  split.sequence_parallel = true;
  const Model<double> sp_model = make_model_shard<double>(mc, 5, split);
  const size_t tp_bytes = plan_activations(tp_model, 2, 64, false).arena.capacity;
  const size_t sp_bytes = plan_activations(sp_model, 2, 64, false).arena.capacity;
  // Per layer x_in, a, x_mid, a2 ([n, d] each) and the statistics halve; one [n, d] gathered
  // input is added.
  const int64_t n = 2 * 64, d = mc.d_model, layers = int64_t(mc.layers.size());
  const int64_t halved = (layers * 4 + 2) * n * d / 2 + (layers * 4 + 3) * n / 2 + n * d / 2;
  EXPECT_EQ(int64_t(tp_bytes) - int64_t(sp_bytes), int64_t(sizeof(double)) * (halved - n * d))
      << "TP2 plans " << tp_bytes << " bytes of activations, TP2 + SP " << sp_bytes;
  EXPECT_LT(sp_bytes, tp_bytes);
}
TEST(ModelParallelNp4, DP2xTP2) { expect_main_presets({2, 1, false}); }
TEST(ModelParallelNp4, DP2xTP2WithSequenceParallel) { expect_main_presets({2, 1, true}); }
TEST(ModelParallelNp4, CP4) { expect_main_presets({1, 4, false}); }
TEST(ModelParallelNp4, TP2xCP2) { expect_main_presets({2, 2, false}); }
TEST(ModelParallelNp4, TP2xCP2WithSequenceParallel) { expect_main_presets({2, 2, true}); }

}  // namespace
}  // namespace sambay
