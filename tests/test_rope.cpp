#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "kernels/rope.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

struct RopeCase {
  int64_t B, L, heads, hd;
  double theta;
};

int64_t numel(const RopeCase& c) { return c.B * c.L * c.heads * c.hd; }

class RopeTest : public ::testing::TestWithParam<RopeCase> {};

TEST_P(RopeTest, GradientsMatchFiniteDifferences) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 1);
  auto probe = testing::random_normal(numel(c), 2);
  std::vector<double> y(numel(c));
  auto loss = [&] {
    rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(numel(c));
  rope_backward(probe.data(), dx.data(), c.B, c.L, c.heads, c.hd, c.theta);
  testing::expect_gradients_match(loss, {{"x", &x, &dx}});
}

TEST_P(RopeTest, Float32MatchesFloat64) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 3);
  std::vector<double> y(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  auto xf = testing::to_f32(x);
  std::vector<float> yf(numel(c));
  rope_forward(xf.data(), yf.data(), c.B, c.L, c.heads, c.hd, c.theta);
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
}

// The half-split layout written out: dimension i pairs with i + hd/2 and turns by the angle
// t * theta^(-2i/hd).
TEST_P(RopeTest, MatchesThePlainFormula) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 4);
  std::vector<double> y(numel(c)), expected(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const int64_t half = c.hd / 2;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t t = 0; t < c.L; ++t)
      for (int64_t h = 0; h < c.heads; ++h) {
        const int64_t base = ((b * c.L + t) * c.heads + h) * c.hd;
        for (int64_t i = 0; i < half; ++i) {
          const double angle = t / std::pow(c.theta, 2.0 * i / c.hd);
          const double x1 = x[base + i], x2 = x[base + half + i];
          expected[base + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
          expected[base + half + i] = x1 * std::sin(angle) + x2 * std::cos(angle);
        }
      }
  EXPECT_LT(testing::relative_error(y, expected), 1e-13);
}

TEST_P(RopeTest, PreservesTheNormOfEveryPair) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 5);
  std::vector<double> y(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const int64_t half = c.hd / 2;
  for (int64_t v = 0; v < numel(c) / c.hd; ++v)
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = v * c.hd + i, b = a + half;
      const double before = x[a] * x[a] + x[b] * x[b];
      const double after = y[a] * y[a] + y[b] * y[b];
      EXPECT_NEAR(after, before, 1e-14 * (1 + before)) << "vector " << v << " pair " << i;
    }
}

TEST_P(RopeTest, PositionZeroIsTheIdentity) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 6);
  std::vector<double> y(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const int64_t row = c.heads * c.hd;  // the elements of one position
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < row; ++i)
      EXPECT_EQ(y[b * c.L * row + i], x[b * c.L * row + i]) << "batch " << b << " element " << i;
}

// rope_backward is the adjoint of rope_forward: <R x, dy> = <x, R^T dy>.
TEST_P(RopeTest, BackwardIsTheTranspose) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 7);
  auto dy = testing::random_normal(numel(c), 8);
  std::vector<double> y(numel(c)), dx(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  rope_backward(dy.data(), dx.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const double lhs = testing::dot(y, dy), rhs = testing::dot(x, dx);
  EXPECT_NEAR(lhs, rhs, 1e-13 * std::sqrt(testing::dot(x, x) * testing::dot(dy, dy)));
}

TEST_P(RopeTest, InPlaceMatchesOutOfPlace) {
  const RopeCase c = GetParam();
  auto x = testing::random_normal(numel(c), 9);
  std::vector<double> y(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  rope_forward(x.data(), x.data(), c.B, c.L, c.heads, c.hd, c.theta);
  EXPECT_EQ(x, y);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeTest,
                         ::testing::Values(RopeCase{1, 1, 1, 2, 10000}, RopeCase{2, 5, 3, 8, 10000},
                                           RopeCase{1, 7, 2, 6, 10}, RopeCase{2, 9, 1, 66, 10000},
                                           RopeCase{1, 33, 4, 64, 500000}),
                         [](const auto& info) {
                           const RopeCase& c = info.param;
                           return fmt::format("B{}_L{}_heads{}_hd{}_theta{}", c.B, c.L, c.heads,
                                              c.hd, c.theta);
                         });

// Context parallelism: a rank rotates its slice of the sequence with the slice's start as the
// position offset, forward and backward, and must get that slice of the whole sequence's result.
TEST_P(RopeTest, SliceWithOffsetMatchesSliceOfWholeSequence) {
  const RopeCase c = GetParam();
  const auto x = testing::random_normal(numel(c), 12);
  const auto dy = testing::random_normal(numel(c), 13);
  std::vector<double> y(numel(c)), dx(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  rope_backward(dy.data(), dx.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const int64_t row = c.heads * c.hd;  // the elements of one position
  // Tokens [start, start + len) of every batch row, as a [B, len, heads, hd] tensor.
  auto slice = [&](const std::vector<double>& v, int64_t start, int64_t len) {
    std::vector<double> part(c.B * len * row);
    for (int64_t b = 0; b < c.B; ++b)
      std::copy_n(v.begin() + (b * c.L + start) * row, len * row, part.begin() + b * len * row);
    return part;
  };
  for (int64_t start = 0; start < c.L; start += std::max<int64_t>(1, c.L / 3)) {
    const int64_t len = std::min<int64_t>(c.L - start, std::max<int64_t>(1, c.L / 3));
    const auto x_part = slice(x, start, len), dy_part = slice(dy, start, len);
    std::vector<double> y_part(x_part.size()), dx_part(x_part.size());
    rope_forward(x_part.data(), y_part.data(), c.B, len, c.heads, c.hd, c.theta, start);
    rope_backward(dy_part.data(), dx_part.data(), c.B, len, c.heads, c.hd, c.theta, start);
    EXPECT_EQ(y_part, slice(y, start, len)) << "slice at " << start;
    EXPECT_EQ(dx_part, slice(dx, start, len)) << "slice at " << start;
  }
}

TEST(Rope, BackwardAccumulatesIntoGradients) {
  const int64_t B = 2, L = 4, heads = 3, hd = 6;
  auto dy = testing::random_normal(B * L * heads * hd, 10);
  std::vector<double> dx1(dy.size());
  rope_backward(dy.data(), dx1.data(), B, L, heads, hd, 10000.0);
  std::vector<double> dx2 = dx1;
  rope_backward(dy.data(), dx2.data(), B, L, heads, hd, 10000.0);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
}

// One head vector rotated as if it stood at position t (of a single-head, single-batch input).
std::vector<double> rotated_at(const std::vector<double>& v, int64_t t, double theta) {
  const int64_t hd = static_cast<int64_t>(v.size());
  std::vector<double> x((t + 1) * hd), y((t + 1) * hd);
  std::copy(v.begin(), v.end(), x.begin() + t * hd);
  rope_forward(x.data(), y.data(), 1, t + 1, 1, hd, theta);
  return {y.begin() + t * hd, y.end()};
}

// Attention scores see only relative positions: <R(t1) q, R(t2) k> depends on t1 - t2 alone.
TEST(Rope, ScoresDependOnlyOnRelativePosition) {
  const int64_t hd = 16;
  const double theta = 100.0;
  const auto q = testing::random_normal(hd, 11), k = testing::random_normal(hd, 12);
  auto score = [&](int64_t t1, int64_t t2) {
    return testing::dot(rotated_at(q, t1, theta), rotated_at(k, t2, theta));
  };
  for (int64_t offset : {0, 1, 3, 7}) {
    const double reference = score(offset, 0);
    for (int64_t t2 : {1, 4, 11, 30})
      EXPECT_NEAR(score(t2 + offset, t2), reference, 1e-12)
          << "offset " << offset << " at key position " << t2;
  }
  // The score does change with the offset, so the checks above can fail.
  EXPECT_GT(std::abs(score(3, 0) - score(1, 0)), 1e-3);
}

TEST(Rope, OddHeadDimThrows) {
  std::vector<double> x(3), y(3);
  EXPECT_THROW(rope_forward(x.data(), y.data(), 1, 1, 1, 3, 10000.0), std::exception);
  EXPECT_THROW(rope_backward(x.data(), y.data(), 1, 1, 1, 3, 10000.0), std::exception);
}

TEST(Rope, NegativePositionOffsetThrows) {
  std::vector<double> x(4), y(4);
  EXPECT_THROW(rope_forward(x.data(), y.data(), 1, 1, 1, 4, 10000.0, -1), std::exception);
}

}  // namespace
}  // namespace sambay
