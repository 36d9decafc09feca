#include <fmt/format.h>

#include <cmath>

#include "kernels/rmsnorm.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

constexpr double kEps = 1e-5;

struct RmsNormCase {
  int64_t rows, d;
};

// Weight near 1 so that every output depends on it.
std::vector<double> random_weight(int64_t d, uint64_t seed) {
  auto w = testing::random_normal(d, seed, 0.3);
  for (double& v : w) v += 1.0;
  return w;
}

class RmsNormTest : public ::testing::TestWithParam<RmsNormCase> {};

TEST_P(RmsNormTest, GradientsMatchFiniteDifferences) {
  const auto [rows, d] = GetParam();
  auto x = testing::random_normal(rows * d, 1);
  auto w = random_weight(d, 2);
  auto probe = testing::random_normal(rows * d, 3);
  std::vector<double> y(rows * d), rstd(rows);

  auto loss = [&] {
    rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, kEps);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(x.size()), dw(w.size());
  rmsnorm_backward(probe.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, d);
  testing::expect_gradients_match(loss, {{"x", &x, &dx}, {"weight", &w, &dw}});
}

TEST_P(RmsNormTest, Float32MatchesFloat64) {
  const auto [rows, d] = GetParam();
  auto x = testing::random_normal(rows * d, 4);
  auto w = random_weight(d, 5);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, kEps);
  auto xf = testing::to_f32(x), wf = testing::to_f32(w);
  std::vector<float> yf(rows * d), rstd_f(rows);
  rmsnorm_forward(xf.data(), wf.data(), yf.data(), rstd_f.data(), rows, d, float(kEps));
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
  EXPECT_LT(testing::relative_error(rstd_f, rstd), 1e-5);
}

TEST_P(RmsNormTest, MatchesAPlainLoop) {
  const auto [rows, d] = GetParam();
  auto x = testing::random_normal(rows * d, 6, 3.0);
  auto w = random_weight(d, 7);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, kEps);
  std::vector<double> expected(rows * d);
  for (int64_t r = 0; r < rows; ++r) {
    double mean_square = 0;
    for (int64_t j = 0; j < d; ++j) mean_square += x[r * d + j] * x[r * d + j];
    mean_square /= d;
    for (int64_t j = 0; j < d; ++j)
      expected[r * d + j] = x[r * d + j] / std::sqrt(mean_square + kEps) * w[j];
    EXPECT_NEAR(rstd[r], 1.0 / std::sqrt(mean_square + kEps), 1e-14 * rstd[r]) << "row " << r;
  }
  EXPECT_LT(testing::relative_error(y, expected), 1e-14);
}

// d >= 2 everywhere: a single element normalises to x / sqrt(x^2 + eps), flat to within eps.
INSTANTIATE_TEST_SUITE_P(Shapes, RmsNormTest,
                         ::testing::Values(RmsNormCase{1, 2}, RmsNormCase{3, 7}, RmsNormCase{6, 16},
                                           RmsNormCase{4, 65}, RmsNormCase{2, 130}),
                         [](const auto& info) {
                           return fmt::format("rows{}_d{}", info.param.rows, info.param.d);
                         });

TEST(RmsNorm, BackwardAccumulatesIntoGradients) {
  const int64_t rows = 3, d = 5;
  auto x = testing::random_normal(rows * d, 8);
  auto w = random_weight(d, 9);
  auto dy = testing::random_normal(rows * d, 10);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, kEps);
  std::vector<double> dx1(rows * d), dw1(d);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx1.data(), dw1.data(), rows, d);
  std::vector<double> dx2 = dx1, dw2 = dw1;
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dx2.data(), dw2.data(), rows, d);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);

  // Null gradient pointers skip those gradients and leave the others unchanged.
  std::vector<double> dx3(rows * d);
  rmsnorm_backward<double>(dy.data(), x.data(), w.data(), rstd.data(), dx3.data(), nullptr, rows,
                           d);
  EXPECT_EQ(dx3, dx1);
}

}  // namespace
}  // namespace sambay
