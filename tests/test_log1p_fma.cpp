// log1p_fma (the scan's softplus logarithm on the FMA units) against log1p in double. The
// function is plain IEEE float arithmetic, so these are the bits the GPU computes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "kernels/log1p_fma.h"

namespace sambay {
namespace {

// Every float of [1/8, 1] (where the polynomial's error peaks) and an even sweep in log scale of
// [1e-30, 1/8]: the relative error stays at the level of a few fp32 roundings.
TEST(Log1pFma, RelativeErrorBelowOnePointSevenTimesTenToTheMinusSeven) {
  double worst = 0;
  float worst_at = 0;
  auto check = [&](float u) {
    const double exact = std::log1p(double(u));
    const double e = std::abs(double(log1p_fma(u)) - exact) / exact;
    if (!(e <= worst)) worst = e, worst_at = u;
  };
  for (float u = 0.125f; u <= 1.f; u = std::nextafter(u, 2.f)) check(u);
  const int64_t steps = 10'000'000;
  for (int64_t i = 0; i < steps; ++i)
    check(float(std::pow(10.0, -30.0 + (30.0 - std::log10(8.0)) * double(i) / double(steps))));
  std::printf("  worst relative error %.3e at u = %.9g\n", worst, worst_at);
  EXPECT_LE(worst, 1.7e-7) << "at u = " << worst_at;
}

TEST(Log1pFma, ZeroGivesZero) { EXPECT_EQ(log1p_fma(0.f), 0.f); }

}  // namespace
}  // namespace sambay
