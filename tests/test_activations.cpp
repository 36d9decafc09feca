#include <fmt/format.h>

#include <cmath>

#include "kernels/activations.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

// Written out independently of the kernels' helpers.
double plain_silu(double x) { return x / (1.0 + std::exp(-x)); }

class SiluTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(SiluTest, GradientsMatchFiniteDifferences) {
  const int64_t n = GetParam();
  auto x = testing::random_normal(n, 1, 3.0);
  auto probe = testing::random_normal(n, 2);
  std::vector<double> y(n);
  auto loss = [&] {
    silu_forward(x.data(), y.data(), n);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(n);
  silu_backward(probe.data(), x.data(), dx.data(), n);
  testing::expect_gradients_match(loss, {{"x", &x, &dx}});
}

TEST_P(SiluTest, Float32MatchesFloat64) {
  const int64_t n = GetParam();
  auto x = testing::random_normal(n, 3, 3.0);
  std::vector<double> y(n);
  silu_forward(x.data(), y.data(), n);
  auto xf = testing::to_f32(x);
  std::vector<float> yf(n);
  silu_forward(xf.data(), yf.data(), n);
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
}

TEST_P(SiluTest, MatchesPlainFormula) {
  const int64_t n = GetParam();
  auto x = testing::random_normal(n, 4, 3.0);
  std::vector<double> y(n), expected(n);
  silu_forward(x.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) expected[i] = plain_silu(x[i]);
  EXPECT_LT(testing::relative_error(y, expected), 1e-14);
}

INSTANTIATE_TEST_SUITE_P(Sizes, SiluTest, ::testing::Values(1, 7, 64, 301),
                         [](const auto& info) { return fmt::format("n{}", info.param); });

TEST(Silu, SaturatesWithoutNaN) {
  const std::vector<double> x = {-1000.0, -50.0, 50.0, 1000.0};
  std::vector<double> y(4), dx(4);
  const std::vector<double> dy(4, 1.0);
  silu_forward(x.data(), y.data(), 4);
  silu_backward(dy.data(), x.data(), dx.data(), 4);
  EXPECT_NEAR(y[0], 0.0, 1e-300);
  EXPECT_NEAR(y[1], 0.0, 1e-18);
  EXPECT_DOUBLE_EQ(y[2], 50.0);
  EXPECT_DOUBLE_EQ(y[3], 1000.0);
  EXPECT_NEAR(dx[0], 0.0, 1e-300);
  EXPECT_DOUBLE_EQ(dx[3], 1.0);
}

TEST(Silu, BackwardAccumulatesIntoGradients) {
  const int64_t n = 9;
  auto x = testing::random_normal(n, 5);
  auto dy = testing::random_normal(n, 6);
  std::vector<double> dx1(n);
  silu_backward(dy.data(), x.data(), dx1.data(), n);
  std::vector<double> dx2 = dx1;
  silu_backward(dy.data(), x.data(), dx2.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
}

struct SwigluCase {
  int64_t rows, F;
};

class SwigluTest : public ::testing::TestWithParam<SwigluCase> {};

TEST_P(SwigluTest, GradientsMatchFiniteDifferences) {
  const auto [rows, F] = GetParam();
  auto h = testing::random_normal(rows * 2 * F, 7, 2.0);
  auto probe = testing::random_normal(rows * F, 8);
  std::vector<double> out(rows * F);
  auto loss = [&] {
    swiglu_forward(h.data(), out.data(), rows, F);
    return testing::dot(out, probe);
  };
  loss();
  std::vector<double> dh(h.size());
  swiglu_backward(probe.data(), h.data(), dh.data(), rows, F);
  testing::expect_gradients_match(loss, {{"h", &h, &dh}});
}

TEST_P(SwigluTest, Float32MatchesFloat64) {
  const auto [rows, F] = GetParam();
  auto h = testing::random_normal(rows * 2 * F, 9, 2.0);
  std::vector<double> out(rows * F);
  swiglu_forward(h.data(), out.data(), rows, F);
  auto hf = testing::to_f32(h);
  std::vector<float> out_f(rows * F);
  swiglu_forward(hf.data(), out_f.data(), rows, F);
  EXPECT_LT(testing::relative_error(out_f, out), 1e-5);
}

// The first half of each fc1 row is the gate g, the second the value u: out = u * silu(g).
TEST_P(SwigluTest, FirstHalfOfFc1IsTheGate) {
  const auto [rows, F] = GetParam();
  auto h = testing::random_normal(rows * 2 * F, 10, 2.0);
  std::vector<double> out(rows * F), expected(rows * F);
  swiglu_forward(h.data(), out.data(), rows, F);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < F; ++j) {
      const double g = h[r * 2 * F + j], u = h[r * 2 * F + F + j];
      expected[r * F + j] = u * plain_silu(g);
    }
  EXPECT_LT(testing::relative_error(out, expected), 1e-14);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluTest,
                         ::testing::Values(SwigluCase{1, 1}, SwigluCase{3, 5}, SwigluCase{4, 16},
                                           SwigluCase{2, 67}),
                         [](const auto& info) {
                           return fmt::format("rows{}_F{}", info.param.rows, info.param.F);
                         });

TEST(Swiglu, BackwardAccumulatesIntoGradients) {
  const int64_t rows = 3, F = 4;
  auto h = testing::random_normal(rows * 2 * F, 11);
  auto dout = testing::random_normal(rows * F, 12);
  std::vector<double> dh1(rows * 2 * F);
  swiglu_backward(dout.data(), h.data(), dh1.data(), rows, F);
  std::vector<double> dh2 = dh1;
  swiglu_backward(dout.data(), h.data(), dh2.data(), rows, F);
  for (size_t i = 0; i < dh1.size(); ++i) EXPECT_DOUBLE_EQ(dh2[i], 2 * dh1[i]);
}

}  // namespace
}  // namespace sambay
