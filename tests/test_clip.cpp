#include "optim/clip.h"
#include "core/check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace sambay {
namespace {

std::vector<std::span<const float>> spans(const std::vector<std::vector<float>>& grads) {
  return {grads.begin(), grads.end()};
}

// {3, 4} and {12}: sqrt(9 + 16 + 144) = 13.
TEST(Clip, GlobalNormByHand) {
  const std::vector<std::vector<float>> g = {{3.0f, 4.0f}, {12.0f}, {}};
  EXPECT_DOUBLE_EQ(global_grad_norm(spans(g)), 13.0);
  EXPECT_DOUBLE_EQ(global_grad_norm({}), 0.0);
}

TEST(Clip, CoefficientByHand) {
  EXPECT_DOUBLE_EQ(clip_coefficient(13.0, 1.0), 1.0 / (13.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_coefficient(0.5, 1.0), 1.0);  // below the threshold: unchanged
  EXPECT_DOUBLE_EQ(clip_coefficient(1.0, 1.0), 1.0 / (1.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_coefficient(0.0, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_coefficient(50.0, 0.0), 1.0);   // max_norm 0 disables clipping
  EXPECT_DOUBLE_EQ(clip_coefficient(50.0, -1.0), 1.0);  // so does a negative one
}

// In float, 1 + 1e-8 == 1: the 2^22 small squares would vanish. In double they add 0.04194304.
TEST(Clip, NormAccumulatesInDouble) {
  std::vector<std::vector<float>> g = {{1.0f}, std::vector<float>(1 << 22, 1e-4f)};
  const double small = double(1e-4f) * double(1e-4f) * (1 << 22);
  EXPECT_NEAR(global_grad_norm(spans(g)), std::sqrt(1.0 + small), 1e-12);
  // Squares of 1e30 overflow float but not double.
  g = {{1e30f, -1e30f}};
  EXPECT_NEAR(global_grad_norm(spans(g)), std::sqrt(2.0) * double(1e30f), 1e16);
}

TEST(Clip, NonFiniteGradientsAreReported) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::vector<float>> g = {{1.0f, 2.0f}, std::vector<float>(100000, 0.5f)};
  EXPECT_TRUE(all_finite(global_grad_norm(spans(g))));
  g[1][54321] = nan;
  EXPECT_FALSE(all_finite(global_grad_norm(spans(g))));
  g[1][54321] = -inf;
  EXPECT_FALSE(all_finite(global_grad_norm(spans(g))));
  // A forgotten check fails loudly instead of returning 1 (NaN) or 0 (inf).
  EXPECT_THROW(clip_coefficient(std::nan(""), 1.0), Error);
  EXPECT_THROW(clip_coefficient(INFINITY, 1.0), Error);
  EXPECT_THROW(clip_coefficient(INFINITY, 0.0), Error);
}

}  // namespace
}  // namespace sambay
