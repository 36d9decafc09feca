// The whole model on the GPU against the CPU model (fp64) on the same parameters and batch:
// the loss and every parameter tensor's gradient, for each architecture (and the untied head
// with ArchScale's μP++: lm_head.weight's gradient, the attention scale); any recompute plan on
// the GPU (per layer, and the loss's logits) gives bit-identical gradients.
#include "core/cuda_runtime.h"
#include "core/gpu_model.h"
#include "core/model.h"
#include "launch/gpu_engine.h"
#include "optim/mup.h"
#include "tests/gpu_test.h"
#include "tests/model_test_data.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <cmath>

namespace sambay {
namespace {

struct Batch {
  std::vector<int32_t> tokens, targets, doc;
};

Batch make_batch(const ModelConfig& c, int64_t B, int64_t L, uint64_t seed) {
  Batch b;
  for (int64_t i = 0; i < B * L; ++i) {
    b.tokens.push_back(static_cast<int32_t>(philox_below(seed, 1, i, c.vocab)));
    b.targets.push_back(i % 7 == 5 ? -1 : static_cast<int32_t>(philox_below(seed, 2, i, c.vocab)));
    b.doc.push_back(static_cast<int32_t>((i % L) / 23));  // documents of 23 tokens
  }
  return b;
}

class GpuModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuModelTest, MatchesCpuModel) {
  SAMBAY_REQUIRE_GPU();
  const ModelConfig c = testing::gpu_test_config(GetParam());
  const int64_t B = 2, L = 45;  // L not a multiple of the scan chunk or attention tiles
  Model<double> cpu = make_model<double>(c, 5);
  // Weights large enough that every path carries signal (0.02 init makes a nearly linear net).
  std::vector<double> noise(cpu.params.size());
  fill_normal(noise.data(), static_cast<int64_t>(noise.size()), 0.0, 0.05, 6, 1);
  for (size_t i = 0; i < noise.size(); ++i) cpu.params[i] += noise[i];
  // The GPU computes with bf16 weights: give the CPU the same (rounded) values; and its loss is
  // that of its stored bf16 logits (kernels/cross_entropy.h): the CPU scores the same logits.
  for (double& p : cpu.params) p = to_float(to_bf16(static_cast<float>(p)));
  cpu.logit_rounding = LogitRounding::bf16;
  Batch b = make_batch(c, B, L, 7);

  Activations<double> cacts = plan_activations(cpu, B, L, false);
  ForwardResult cr = model_forward(cpu, cacts, b.tokens.data(), b.targets.data(), b.doc.data());
  model_backward(cpu, cacts, b.tokens.data(), b.targets.data(), b.doc.data(),
                 1.0 / cr.valid_rows);

  cudaStream_t stream = cuda_stream_create();
  GpuModel gpu = make_gpu_model(cpu, stream);
  GpuActivations gacts = plan_gpu_activations(gpu, B, L, false);
  upload_batch(gpu, gacts, b.tokens.data(), b.targets.data(), b.doc.data());
  ForwardResult gr = gpu_model_forward(gpu, gacts, true);
  gpu_model_backward(gpu, gacts, true, 1.0f / gr.valid_rows);
  const std::vector<float> grads = download_grads(gpu);

  EXPECT_EQ(gr.valid_rows, cr.valid_rows);
  EXPECT_NEAR(gr.loss_sum, cr.loss_sum, 1e-2 * std::abs(cr.loss_sum));
  // bf16 activations through 8 layers: a few roundings of 2^-9 compound; 3e-2 per tensor.
  double worst = 0;
  std::string worst_name;
  for (const ParamSpec& p : cpu.layout.params) {
    std::vector<double> want(cpu.grads.begin() + p.offset, cpu.grads.begin() + p.offset + p.numel);
    std::vector<double> got(grads.begin() + p.offset, grads.begin() + p.offset + p.numel);
    const double err = testing::relative_error(got, want);
    EXPECT_LT(err, 3e-2) << p.name;
    if (err > worst) worst = err, worst_name = p.name;
  }
  fmt::print("{}: loss cpu {:.6f} gpu {:.6f}; worst gradient error {:.2e} ({})\n", c.name,
             cr.loss_sum / cr.valid_rows, gr.loss_sum / gr.valid_rows, worst, worst_name);
  cuda_stream_destroy(stream);
}

// Any recompute plan gives the bits of no recompute: every layer recomputed, alternate layers,
// the kv-source and memory layers alone (later layers read their outputs), all but those; with
// the loss's logits kept or recomputed (its one vocabulary chunk here; the kernel's test covers
// several).
TEST_P(GpuModelTest, RecomputeGivesBitIdenticalGradients) {
  SAMBAY_REQUIRE_GPU();
  const ModelConfig c = testing::gpu_test_config(GetParam());
  Model<float> cpu = make_model<float>(c, 9);
  Batch b = make_batch(c, 2, 45, 10);
  const int n_layers = static_cast<int>(c.layers.size());
  RecomputePlan alternate = no_recompute(c), sources = no_recompute(c),
                all_but_sources = full_recompute(c), logits_only = no_recompute(c);
  for (int i = 0; i < n_layers; ++i) alternate.layers[i] = i % 2 == 0;
  alternate.loss_kept_chunks = 0;
  for (int i : {c.kv_source_layer, c.memory_layer})
    if (i >= 0) sources.layers[i] = true, all_but_sources.layers[i] = false;
  logits_only.loss_kept_chunks = 0;
  const std::vector<RecomputePlan> plans = {no_recompute(c), full_recompute(c), alternate,
                                            sources,         all_but_sources,   logits_only};
  std::vector<float> grads0;
  double loss0 = 0;
  cudaStream_t stream = cuda_stream_create();
  for (size_t p = 0; p < plans.size(); ++p) {
    GpuModel gpu = make_gpu_model(cpu, stream);
    GpuActivations acts = plan_gpu_activations(gpu, 2, 45, plans[p]);
    upload_batch(gpu, acts, b.tokens.data(), b.targets.data(), b.doc.data());
    ForwardResult r = gpu_model_forward(gpu, acts, true);
    gpu_model_backward(gpu, acts, true, 1.0f / r.valid_rows);
    const std::vector<float> grads = download_grads(gpu);
    if (p == 0) {
      grads0 = grads, loss0 = r.loss_sum;
      continue;
    }
    const std::string what = describe_recompute(c, plans[p], true);
    EXPECT_EQ(r.loss_sum, loss0) << what;
    for (size_t i = 0; i < grads0.size(); ++i)
      ASSERT_EQ(grads[i], grads0[i]) << what << ": gradient element " << i;
  }
  cuda_stream_destroy(stream);
}

// The engine resolves --recompute on the device: auto keeps everything when the GPU has room (a
// small model on a large GPU), all and none are taken as given; the log names the budget.
TEST(GpuEngine, RecomputeModeIsResolvedOnTheDevice) {
  SAMBAY_REQUIRE_GPU();
  const ModelConfig c = testing::gpu_test_config("sambay-da");
  Model<float> cpu = make_model<float>(c, 9);
  const struct {
    RecomputeMode mode;
    RecomputePlan plan;
  } cases[] = {{RecomputeMode::auto_choice, no_recompute(c)},
               {RecomputeMode::none, no_recompute(c)},
               {RecomputeMode::all, full_recompute(c)}};
  for (const auto& k : cases) {
    GpuEngine e = make_gpu_engine(cpu, param_groups(cpu.layout, mup_config_for(c)), 2, 45, k.mode,
                                  true);
    EXPECT_EQ(e.acts.recompute, k.plan) << recompute_mode_name(k.mode) << "\n" << e.recompute.log;
    const int64_t capacity = static_cast<int64_t>(e.acts.arena.capacity);
    EXPECT_GE(capacity, e.recompute.bytes);  // the plan's bytes, rounded up to the alignment
    EXPECT_LT(capacity, e.recompute.bytes + 256);
    EXPECT_NE(e.recompute.log.find("GiB for activations"), std::string::npos) << e.recompute.log;
    if (k.mode == RecomputeMode::auto_choice) {
      EXPECT_NE(e.recompute.log.find("(chosen)"), std::string::npos) << e.recompute.log;
    }
  }
}

// The parameter arena holds any layout: the tiny presets' odd parameter counts, whole and as
// tensor-parallel shards (each of its five buffers is rounded up to the arena's alignment).
TEST(GpuModel, ParameterArenaFitsAnyLayout) {
  SAMBAY_REQUIRE_GPU();
  Communicator tp;  // make_gpu_model reads only the group's backend, size and rank
  tp.backend = CommBackend::nccl, tp.name = "tp", tp.size = 2;
  for (const char* preset : {"tiny-sambay", "tiny-samba-yoco", "tiny-transformerpp"})
    for (int rank : {-1, 0, 1}) {
      ModelSplit split;
      if (rank >= 0) tp.rank = rank, split.tp = &tp;
      const Model<float> cpu = make_model_shard<float>(model_preset(preset), 3, split);
      EXPECT_NO_THROW(make_gpu_model(cpu, nullptr)) << preset << " rank " << rank;
    }
}

// The untied μP++ head on the SambaY graph and on Transformer++. Not SambaY+DA with μP++: with
// this test's weights its gradients are ill-conditioned (on the CPU in fp64, weights moved by
// 2^-9 relative, the bf16 rounding, move the lambda vectors' gradients by 0.30 and 111 tensors'
// by more than 1e-2, against 0.022 at most for sambay-da), so no bf16 computation can meet 3e-2
// there (the GPU gave 0.19 on lambda, 3.0 to 3.7e-2 on 20 tensors).
INSTANTIATE_TEST_SUITE_P(Architectures, GpuModelTest,
                         ::testing::Values("sambay-da", "sambay", "samba-yoco", "transformerpp",
                                           "sambay-mup-untied", "transformerpp-mup-untied"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace sambay
