#include <fmt/format.h>

#include <cmath>

#include "kernels/gmu.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

using testing::GradInput;

constexpr double kEps = 1e-5;

double plain_silu(double x) { return x / (1.0 + std::exp(-x)); }

struct GmuCase {
  int64_t rows, E;
  bool normed;  // nGMU (RMSNorm with a weight) or plain GMU
};

// Weight near 1 so that every output depends on it.
std::vector<double> random_weight(int64_t E, uint64_t seed) {
  auto w = testing::random_normal(E, seed, 0.3);
  for (double& v : w) v += 1.0;
  return w;
}

class GmuTest : public ::testing::TestWithParam<GmuCase> {};

TEST_P(GmuTest, GradientsMatchFiniteDifferences) {
  const auto [rows, E, normed] = GetParam();
  auto m = testing::random_normal(rows * E, 1);
  auto g = testing::random_normal(rows * E, 2, 2.0);
  auto w = random_weight(E, 3);
  auto probe = testing::random_normal(rows * E, 4);
  const double* weight = normed ? w.data() : nullptr;
  std::vector<double> out(rows * E), rstd(rows);

  auto loss = [&] {
    gmu_forward(m.data(), g.data(), weight, out.data(), rstd.data(), rows, E, kEps);
    return testing::dot(out, probe);
  };
  loss();
  std::vector<double> dm(m.size()), dg(g.size()), dw(w.size());
  gmu_backward(probe.data(), m.data(), g.data(), weight, rstd.data(), dm.data(), dg.data(),
               normed ? dw.data() : nullptr, rows, E);
  std::vector<GradInput> inputs = {{"m", &m, &dm}, {"g", &g, &dg}};
  if (normed) inputs.push_back({"norm_weight", &w, &dw});
  testing::expect_gradients_match(loss, inputs);
}

TEST_P(GmuTest, Float32MatchesFloat64) {
  const auto [rows, E, normed] = GetParam();
  auto m = testing::random_normal(rows * E, 5);
  auto g = testing::random_normal(rows * E, 6, 2.0);
  auto w = random_weight(E, 7);
  std::vector<double> out(rows * E), rstd(rows);
  gmu_forward(m.data(), g.data(), normed ? w.data() : nullptr, out.data(), rstd.data(), rows, E,
              kEps);
  auto mf = testing::to_f32(m), gf = testing::to_f32(g), wf = testing::to_f32(w);
  std::vector<float> out_f(rows * E), rstd_f(rows);
  gmu_forward(mf.data(), gf.data(), normed ? wf.data() : nullptr, out_f.data(), rstd_f.data(), rows,
              E, float(kEps));
  EXPECT_LT(testing::relative_error(out_f, out), 1e-5);
  if (normed) {
    EXPECT_LT(testing::relative_error(rstd_f, rstd), 1e-5);
  }
}

// E >= 2 for the nGMU: one element normalises to a constant sign (see test_rmsnorm.cpp).
INSTANTIATE_TEST_SUITE_P(Shapes, GmuTest,
                         ::testing::Values(GmuCase{1, 1, false}, GmuCase{3, 7, false},
                                           GmuCase{4, 67, false}, GmuCase{1, 2, true},
                                           GmuCase{3, 7, true}, GmuCase{5, 16, true},
                                           GmuCase{4, 67, true}, GmuCase{2, 130, true}),
                         [](const auto& info) {
                           const GmuCase& c = info.param;
                           return fmt::format("rows{}_E{}_{}", c.rows, c.E,
                                              c.normed ? "nGMU" : "GMU");
                         });

// Without a norm weight the op is the GMU's gate and nothing else: m * silu(g).
TEST(Gmu, WithoutNormIsMemoryTimesSiluOfGate) {
  const int64_t rows = 4, E = 9;
  auto m = testing::random_normal(rows * E, 8);
  auto g = testing::random_normal(rows * E, 9, 2.0);
  std::vector<double> out(rows * E), expected(rows * E);
  gmu_forward<double>(m.data(), g.data(), nullptr, out.data(), nullptr, rows, E, kEps);
  for (int64_t i = 0; i < rows * E; ++i) expected[i] = m[i] * plain_silu(g[i]);
  EXPECT_LT(testing::relative_error(out, expected), 1e-14);
}

// nGMU = RMSNorm (written out here) applied to the plain GMU's output.
TEST(Gmu, NormedEqualsGmuFollowedByRmsNorm) {
  const int64_t rows = 5, E = 13;
  auto m = testing::random_normal(rows * E, 10);
  auto g = testing::random_normal(rows * E, 11, 2.0);
  auto w = random_weight(E, 12);
  std::vector<double> gated(rows * E), out(rows * E), rstd(rows), expected(rows * E);
  gmu_forward<double>(m.data(), g.data(), nullptr, gated.data(), nullptr, rows, E, kEps);
  gmu_forward(m.data(), g.data(), w.data(), out.data(), rstd.data(), rows, E, kEps);
  for (int64_t r = 0; r < rows; ++r) {
    double mean_square = 0;
    for (int64_t j = 0; j < E; ++j) mean_square += gated[r * E + j] * gated[r * E + j] / E;
    const double scale = 1.0 / std::sqrt(mean_square + kEps);
    for (int64_t j = 0; j < E; ++j) expected[r * E + j] = gated[r * E + j] * scale * w[j];
    EXPECT_NEAR(rstd[r], scale, 1e-14 * scale) << "row " << r;
  }
  EXPECT_LT(testing::relative_error(out, expected), 1e-14);
}

TEST(Gmu, BackwardAccumulatesIntoGradients) {
  const int64_t rows = 3, E = 6;
  auto m = testing::random_normal(rows * E, 13);
  auto g = testing::random_normal(rows * E, 14);
  auto w = random_weight(E, 15);
  auto dout = testing::random_normal(rows * E, 16);
  std::vector<double> out(rows * E), rstd(rows);
  gmu_forward(m.data(), g.data(), w.data(), out.data(), rstd.data(), rows, E, kEps);
  std::vector<double> dm1(rows * E), dg1(rows * E), dw1(E);
  gmu_backward(dout.data(), m.data(), g.data(), w.data(), rstd.data(), dm1.data(), dg1.data(),
               dw1.data(), rows, E);
  std::vector<double> dm2 = dm1, dg2 = dg1, dw2 = dw1;
  gmu_backward(dout.data(), m.data(), g.data(), w.data(), rstd.data(), dm2.data(), dg2.data(),
               dw2.data(), rows, E);
  for (size_t i = 0; i < dm1.size(); ++i) EXPECT_DOUBLE_EQ(dm2[i], 2 * dm1[i]);
  for (size_t i = 0; i < dg1.size(); ++i) EXPECT_DOUBLE_EQ(dg2[i], 2 * dg1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);

  // Null gradient pointers skip those gradients and leave the others unchanged.
  std::vector<double> dg3(rows * E);
  gmu_backward<double>(dout.data(), m.data(), g.data(), w.data(), rstd.data(), nullptr, dg3.data(),
                       nullptr, rows, E);
  EXPECT_EQ(dg3, dg1);
}

}  // namespace
}  // namespace sambay
