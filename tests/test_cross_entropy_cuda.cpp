// Tied chunked cross-entropy on the GPU against the CPU reference in double on the same bf16
// operands.
#include <fmt/format.h>

#include <string>

#include "core/check.h"
#include "core/philox.h"
#include "kernels/cross_entropy.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct XentCase {
  int64_t n, d, V, chunk;
  float logit_scale;
  int ignore_every;  // every ignore_every-th row (from row 1) gets a negative target; 0: none
};

std::vector<int32_t> make_targets(int64_t n, int64_t V, int ignore_every, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) {
    t[i] = static_cast<int32_t>(philox_below(seed, 3, i, V));
    if (ignore_every > 0 && i % ignore_every == 1) t[i] = (i / ignore_every) % 2 ? -100 : -1;
  }
  return t;
}

class CrossEntropyCudaTest : public ::testing::TestWithParam<XentCase> {};

TEST_P(CrossEntropyCudaTest, ForwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  const auto h = testing::random_bf16(n * d, 1);
  const auto emb = testing::random_bf16(V * d, 2);
  const auto targets = make_targets(n, V, ignore_every, 3);
  std::vector<double> lse(n);
  int64_t valid = -1;
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, double(s), chunk, &valid);

  DeviceBuffer<bf16> d_h(testing::to_bf16_vector(h)), d_emb(testing::to_bf16_vector(emb));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_lse(n);
  d_lse.poison();
  int64_t got_valid = -1;
  const double got_loss = tied_cross_entropy_forward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr,
                                                          d_lse.ptr, n, d, V, s, chunk,
                                                          &got_valid, nullptr);
  EXPECT_EQ(got_valid, valid);
  EXPECT_NEAR(got_loss, loss, 1e-5 * std::abs(loss));
  // lse in fp32 from fp32 logits; ignored rows hold 0.
  EXPECT_LT(testing::relative_error(testing::download_f64(d_lse), lse), 1e-5);
}

TEST_P(CrossEntropyCudaTest, BackwardAddsBothGradients) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  const auto h = testing::random_bf16(n * d, 4);
  const auto emb = testing::random_bf16(V * d, 5);
  const auto targets = make_targets(n, V, ignore_every, 6);
  std::vector<double> lse(n), gh(n * d), gemb(V * d);
  int64_t valid = 0;
  tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V, double(s),
                             chunk, &valid);
  const float grad_scale = 1.0f / float(std::max<int64_t>(valid, 1));
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), gh.data(),
                              gemb.data(), n, d, V, double(s), chunk, double(grad_scale));
  const auto dh0 = testing::initial_bf16_like(gh, 7);
  const auto demb0 = testing::initial_f32_like(gemb, 8);

  DeviceBuffer<bf16> d_h(testing::to_bf16_vector(h)), d_emb(testing::to_bf16_vector(emb));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_lse(n);
  DeviceBuffer<bf16> d_dh(testing::to_bf16_vector(dh0));
  DeviceBuffer<float> d_demb(testing::to_f32(demb0));
  tied_cross_entropy_forward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, n, d, V, s, chunk,
                                  nullptr, nullptr);
  tied_cross_entropy_backward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, d_dh.ptr,
                                   d_demb.ptr, n, d, V, s, chunk, grad_scale, nullptr);
  // The softmax gradient is rounded to bf16 before the two GEMMs: bf16-level agreement.
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dh), testing::plus(dh0, gh)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_demb), testing::plus(demb0, gemb)),
            1e-2);

  // Null gradients are skipped: demb alone.
  DeviceBuffer<float> d_demb_only(testing::to_f32(demb0));
  tied_cross_entropy_backward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, nullptr,
                                   d_demb_only.ptr, n, d, V, s, chunk, grad_scale, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_demb_only), testing::plus(demb0, gemb)),
            1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CrossEntropyCudaTest,
                         ::testing::Values(XentCase{1, 1, 1, 1, 1.0f, 0},
                                           XentCase{5, 3, 7, 3, 0.75f, 2},
                                           XentCase{9, 16, 20, 7, 1.25f, 3},
                                           XentCase{33, 40, 50, 50, 0.5f, 4},
                                           XentCase{64, 64, 1000, 256, 1.0f, 5},
                                           XentCase{130, 96, 3001, 1024, 0.25f, 7},
                                           XentCase{200, 72, 2500, 333, 1.0f, 10},
                                           XentCase{257, 128, 5000, 8192, 0.125f, 0}),
                         [](const auto& info) {
                           const XentCase& c = info.param;
                           return fmt::format("n{}_d{}_V{}_chunk{}_scale{}_ignore{}", c.n, c.d,
                                              c.V, c.chunk, int(c.logit_scale * 100),
                                              c.ignore_every);
                         });

TEST(CrossEntropyCuda, TargetOutsideTheVocabularyThrowsNamingTheRow) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 6, d = 8, V = 10;
  const auto h = testing::random_bf16(n * d, 9);
  const auto emb = testing::random_bf16(V * d, 10);
  const std::vector<int32_t> targets = {1, -1, 3, 10, 2, 12};
  DeviceBuffer<bf16> d_h(testing::to_bf16_vector(h)), d_emb(testing::to_bf16_vector(emb));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_lse(n);
  try {
    tied_cross_entropy_forward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, n, d, V, 1.0f, 4,
                                    nullptr, nullptr);
    FAIL() << "expected a throw";
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("target 10 at row 3"), std::string::npos) << message;
  }
}

TEST(CrossEntropyCuda, AllRowsIgnoredGiveZeroLossAndGradient) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 4, d = 8, V = 12;
  const std::vector<int32_t> targets(n, -1);
  DeviceBuffer<bf16> d_h(testing::to_bf16_vector(testing::random_bf16(n * d, 11)));
  DeviceBuffer<bf16> d_emb(testing::to_bf16_vector(testing::random_bf16(V * d, 12)));
  DeviceBuffer<int32_t> d_targets(targets);
  DeviceBuffer<float> d_lse(n), d_demb(V * d);
  DeviceBuffer<bf16> d_dh(n * d);
  d_lse.poison(), d_demb.zero(), d_dh.zero();
  int64_t valid = -1;
  EXPECT_EQ(tied_cross_entropy_forward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, n, d, V,
                                            1.0f, 5, &valid, nullptr),
            0.0);
  EXPECT_EQ(valid, 0);
  EXPECT_EQ(d_lse.download(), std::vector<float>(n, 0.0f));
  tied_cross_entropy_backward_cuda(d_h.ptr, d_emb.ptr, d_targets.ptr, d_lse.ptr, d_dh.ptr,
                                   d_demb.ptr, n, d, V, 1.0f, 5, 1.0f, nullptr);
  EXPECT_EQ(d_demb.download(), std::vector<float>(V * d, 0.0f));
  EXPECT_EQ(testing::download_f64(d_dh), std::vector<double>(n * d, 0.0));
}

}  // namespace
}  // namespace sambay
