#include "optim/adamw.h"
#include "core/check.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <cmath>

namespace sambay {
namespace {

// Two steps on one parameter, worked out by hand with
//   lr = 0.1, beta1 = 0.9, beta2 = 0.99, eps = 1e-8, weight_decay = 0.1, p0 = 1, g1 = 0.5,
//   g2 = -0.25.
// Step 1: decay p = 1 * (1 - 0.1 * 0.1) = 0.99
//         m = 0.1 * 0.5 = 0.05,  v = 0.01 * 0.25 = 0.0025
//         m_hat = 0.05 / (1 - 0.9) = 0.5,  v_hat = 0.0025 / (1 - 0.99) = 0.25,  sqrt = 0.5
//         p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.99 - 0.099999998 = 0.890000002
// Step 2: decay p = 0.890000002 * 0.99 = 0.88110000198
//         m = 0.9 * 0.05 + 0.1 * (-0.25) = 0.02,  v = 0.99 * 0.0025 + 0.01 * 0.0625 = 0.0031
//         m_hat = 0.02 / (1 - 0.81) = 2/19 = 0.1052631579
//         v_hat = 0.0031 / (1 - 0.9801) = 31/199 = 0.1557788945,  sqrt = 0.3946883511
//         p = 0.88110000198 - 0.1 * 0.1052631579 / (0.3946883511 + 1e-8)
//           = 0.88110000198 - 0.0266699422 = 0.8544300597
// param, m and v are stored in fp32, so the hand values are matched to fp32 resolution: within
// 2^-22 relative (about two float ulps; e.g. m = 0.0200000006706 is stored as 0.0200000014156).
// A wrong update (no bias correction, decay after the step, L2 instead of decoupled) is off by
// 1e-3 or more.
void expect_float_close(float actual, double expected) {
  EXPECT_NEAR(actual, expected, std::ldexp(std::abs(expected), -22));
}

TEST(AdamW, HandComputedTwoSteps) {
  const AdamWHyper h{0.1, 0.9, 0.99, 1e-8, 0.1};
  float p = 1.0f, m = 0.0f, v = 0.0f;
  float g = 0.5f;
  adamw_update(&p, &g, &m, &v, 1, h, 1);
  expect_float_close(p, 0.890000002);
  expect_float_close(m, 0.05);
  expect_float_close(v, 0.0025);
  g = -0.25f;
  adamw_update(&p, &g, &m, &v, 1, h, 2);
  expect_float_close(p, 0.8544300597);
  expect_float_close(m, 0.02);
  expect_float_close(v, 0.0031);
}

// Weight decay is decoupled: with a zero gradient the parameter only shrinks by lr * wd (the
// Adam term is 0 / (0 + eps) = 0), unlike L2 regularisation which would go through m and v.
TEST(AdamW, DecayIsDecoupledFromTheGradient) {
  const AdamWHyper h{0.01, 0.9, 0.999, 1e-8, 0.5};
  float p = 2.0f, m = 0.0f, v = 0.0f, g = 0.0f;
  adamw_update(&p, &g, &m, &v, 1, h, 1);
  EXPECT_FLOAT_EQ(p, 2.0f * (1.0f - 0.005f));
  EXPECT_EQ(m, 0.0f);
  EXPECT_EQ(v, 0.0f);
}

TEST(AdamW, StepMustStartAtOne) {
  const AdamWHyper h{0.1, 0.9, 0.99, 1e-8, 0.0};
  float p = 1, g = 1, m = 0, v = 0;
  EXPECT_THROW(adamw_update(&p, &g, &m, &v, 1, h, 0), Error);
}

struct AdamWCase {
  std::string name;
  AdamWHyper h;
  int64_t n;
};

class AdamWTest : public ::testing::TestWithParam<AdamWCase> {};

// Several steps on a vector against a textbook loop in double (bias-corrected moments, then the
// decoupled decay p -= lr * wd * p taken from the pre-step value).
TEST_P(AdamWTest, MatchesPlainLoop) {
  const auto& [name, h, n] = GetParam();
  auto p_ref = testing::random_normal(n, 1);
  std::vector<double> m_ref(n, 0.0), v_ref(n, 0.0);
  auto p = testing::to_f32(p_ref);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  for (int64_t step = 1; step <= 6; ++step) {
    auto grad = testing::to_f32(testing::random_normal(n, 100 + step, 0.3 * step));
    adamw_update(p.data(), grad.data(), m.data(), v.data(), n, h, step);
    for (int64_t i = 0; i < n; ++i) {
      const double gi = grad[i];
      m_ref[i] = h.beta1 * m_ref[i] + (1 - h.beta1) * gi;
      v_ref[i] = h.beta2 * v_ref[i] + (1 - h.beta2) * gi * gi;
      const double m_hat = m_ref[i] / (1 - std::pow(h.beta1, step));
      const double v_hat = v_ref[i] / (1 - std::pow(h.beta2, step));
      p_ref[i] -= h.lr * h.weight_decay * p_ref[i] + h.lr * m_hat / (std::sqrt(v_hat) + h.eps);
    }
  }
  EXPECT_LT(testing::relative_error(p, p_ref), 1e-6);
  EXPECT_LT(testing::relative_error(m, m_ref), 1e-6);
  EXPECT_LT(testing::relative_error(v, v_ref), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Hyper, AdamWTest,
    ::testing::Values(AdamWCase{"decay", {1e-2, 0.9, 0.95, 1e-8, 0.1}, 1000},
                      AdamWCase{"no_decay", {3e-3, 0.9, 0.999, 1e-8, 0.0}, 37},
                      AdamWCase{"large_eps", {1e-1, 0.8, 0.9, 1e-2, 0.3}, 5}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sambay
