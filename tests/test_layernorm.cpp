#include <fmt/format.h>

#include <cmath>

#include "kernels/layernorm.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

using testing::GradInput;

constexpr double kEps = 1e-5;

struct LayerNormCase {
  int64_t rows, d;
};

// Rows with an offset mean and a spread well above eps. No case has d < 3: a row of one or two
// elements normalises to a constant (0, or +-sqrt(var / (var + eps))), whose gradient is of
// order eps and drowns in the finite differences' rounding error.
std::vector<double> random_rows(int64_t n, uint64_t seed) {
  auto x = testing::random_normal(n, seed, 2.0);
  for (double& v : x) v += 0.7;
  return x;
}

// Weight near 1 and a nonzero bias, so that both enter every output.
std::vector<double> random_weight(int64_t d, uint64_t seed) {
  auto w = testing::random_normal(d, seed, 0.3);
  for (double& v : w) v += 1.0;
  return w;
}

class LayerNormTest : public ::testing::TestWithParam<LayerNormCase> {};

TEST_P(LayerNormTest, GradientsMatchFiniteDifferences) {
  const auto [rows, d] = GetParam();
  auto x = random_rows(rows * d, 1);
  auto w = random_weight(d, 2);
  auto b = testing::random_normal(d, 3);
  auto probe = testing::random_normal(rows * d, 4);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);

  auto loss = [&] {
    layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                      kEps);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
  layernorm_backward(probe.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                     dw.data(), db.data(), rows, d);
  testing::expect_gradients_match(loss, {{"x", &x, &dx}, {"weight", &w, &dw}, {"bias", &b, &db}});
}

TEST_P(LayerNormTest, Float32MatchesFloat64) {
  const auto [rows, d] = GetParam();
  auto x = random_rows(rows * d, 5);
  auto w = random_weight(d, 6);
  auto b = testing::random_normal(d, 7);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    kEps);
  auto xf = testing::to_f32(x), wf = testing::to_f32(w), bf = testing::to_f32(b);
  std::vector<float> yf(rows * d), mean_f(rows), rstd_f(rows);
  layernorm_forward(xf.data(), wf.data(), bf.data(), yf.data(), mean_f.data(), rstd_f.data(), rows,
                    d, float(kEps));
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
  EXPECT_LT(testing::relative_error(mean_f, mean), 1e-5);
  EXPECT_LT(testing::relative_error(rstd_f, rstd), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LayerNormTest,
                         ::testing::Values(LayerNormCase{1, 3}, LayerNormCase{3, 7},
                                           LayerNormCase{5, 16}, LayerNormCase{4, 65},
                                           LayerNormCase{2, 130}),
                         [](const auto& info) {
                           return fmt::format("rows{}_d{}", info.param.rows, info.param.d);
                         });

TEST(LayerNorm, RowsHaveZeroMeanAndUnitVarianceBeforeTheAffine) {
  const int64_t rows = 6, d = 37;
  auto x = random_rows(rows * d, 8);
  for (int64_t j = 0; j < d; ++j) x[j] += 1000.0;  // a row with a large mean
  const std::vector<double> ones(d, 1.0), zeros(d, 0.0);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), ones.data(), zeros.data(), y.data(), mean.data(), rstd.data(), rows,
                    d, kEps);
  for (int64_t r = 0; r < rows; ++r) {
    double x_mean = 0, y_mean = 0;
    for (int64_t j = 0; j < d; ++j) x_mean += x[r * d + j] / d, y_mean += y[r * d + j] / d;
    double x_var = 0, y_var = 0;
    for (int64_t j = 0; j < d; ++j) {
      x_var += (x[r * d + j] - x_mean) * (x[r * d + j] - x_mean) / d;
      y_var += y[r * d + j] * y[r * d + j] / d;
    }
    EXPECT_NEAR(y_mean, 0.0, 1e-12) << "row " << r;
    // Exactly var / (var + eps) in exact arithmetic: within 1e-5 of 1 for var ~ 4.
    EXPECT_NEAR(y_var, x_var / (x_var + kEps), 1e-12) << "row " << r;
    EXPECT_NEAR(y_var, 1.0, 1e-5) << "row " << r;
    EXPECT_NEAR(mean[r], x_mean, 1e-12 * std::abs(x_mean)) << "row " << r;
    EXPECT_NEAR(rstd[r], 1.0 / std::sqrt(x_var + kEps), 1e-12) << "row " << r;
  }
}

TEST(LayerNorm, AffineIsWeightTimesNormalisedPlusBias) {
  const int64_t rows = 3, d = 11;
  auto x = random_rows(rows * d, 9);
  auto w = random_weight(d, 10);
  auto b = testing::random_normal(d, 11);
  const std::vector<double> ones(d, 1.0), zeros(d, 0.0);
  std::vector<double> y(rows * d), plain(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), ones.data(), zeros.data(), plain.data(), mean.data(), rstd.data(),
                    rows, d, kEps);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    kEps);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < d; ++j)
      EXPECT_NEAR(y[r * d + j], plain[r * d + j] * w[j] + b[j], 1e-14);
}

TEST(LayerNorm, BackwardAccumulatesIntoGradients) {
  const int64_t rows = 3, d = 5;
  auto x = random_rows(rows * d, 12);
  auto w = random_weight(d, 13);
  auto b = testing::random_normal(d, 14);
  auto dy = testing::random_normal(rows * d, 15);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    kEps);
  std::vector<double> dx1(rows * d), dw1(d), db1(d);
  layernorm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx1.data(),
                     dw1.data(), db1.data(), rows, d);
  std::vector<double> dx2 = dx1, dw2 = dw1, db2 = db1;
  layernorm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx2.data(),
                     dw2.data(), db2.data(), rows, d);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);
  for (size_t i = 0; i < db1.size(); ++i) EXPECT_DOUBLE_EQ(db2[i], 2 * db1[i]);

  // Null gradient pointers skip those gradients and leave the others unchanged.
  std::vector<double> dw3(d);
  layernorm_backward<double>(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), nullptr,
                             dw3.data(), nullptr, rows, d);
  EXPECT_EQ(dw3, dw1);
}

}  // namespace
}  // namespace sambay
