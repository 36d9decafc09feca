// The whole model on the GPU against the CPU model (fp64) on the same parameters and batch:
// the loss and every parameter tensor's gradient, for each architecture (and the untied head
// with ArchScale's μP++: lm_head.weight's gradient, the attention scale); recompute on the GPU
// gives bit-identical gradients.
#include "core/cuda_runtime.h"
#include "core/gpu_model.h"
#include "core/model.h"
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
  // The GPU computes with bf16 weights: give the CPU the same (rounded) values.
  for (double& p : cpu.params) p = to_float(to_bf16(static_cast<float>(p)));
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

TEST_P(GpuModelTest, RecomputeGivesBitIdenticalGradients) {
  SAMBAY_REQUIRE_GPU();
  const ModelConfig c = testing::gpu_test_config(GetParam());
  Model<float> cpu = make_model<float>(c, 9);
  Batch b = make_batch(c, 2, 45, 10);
  std::vector<float> grads[2];
  double loss[2];
  cudaStream_t stream = cuda_stream_create();
  for (int recompute = 0; recompute < 2; ++recompute) {
    GpuModel gpu = make_gpu_model(cpu, stream);
    GpuActivations acts = plan_gpu_activations(gpu, 2, 45, recompute == 1);
    upload_batch(gpu, acts, b.tokens.data(), b.targets.data(), b.doc.data());
    ForwardResult r = gpu_model_forward(gpu, acts, true);
    gpu_model_backward(gpu, acts, true, 1.0f / r.valid_rows);
    grads[recompute] = download_grads(gpu);
    loss[recompute] = r.loss_sum;
  }
  EXPECT_EQ(loss[0], loss[1]);
  for (size_t i = 0; i < grads[0].size(); ++i)
    ASSERT_EQ(grads[0][i], grads[1][i]) << "gradient element " << i;
  cuda_stream_destroy(stream);
}

INSTANTIATE_TEST_SUITE_P(Architectures, GpuModelTest,
                         ::testing::Values("sambay-da", "sambay", "samba-yoco", "transformerpp",
                                           "sambay-da-mup-untied", "transformerpp-mup-untied"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace sambay
