// exp2_fma (the scan's exponential on the FMA units) against exp2 in double. The function is
// plain IEEE float arithmetic, so these are the bits the GPU computes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "kernels/exp2_fma.h"

namespace sambay {
namespace {

double relative_error(float x) {
  const double exact = std::exp2(double(x));
  return std::abs(double(exp2_fma(x)) - exact) / exact;
}

// Every float of [1/4, 2] and [-2, -1/4] (the reduction's seams at +-1/2 and +-3/2 included) and
// an even sweep of the whole domain.
TEST(Exp2Fma, RelativeErrorBelowTwoPointThreeTimesTenToTheMinusSeven) {
  double worst = 0;
  float worst_at = 0;
  auto check = [&](float x) {
    const double e = relative_error(x);
    if (!(e <= worst)) worst = e, worst_at = x;
  };
  for (float x = 0.25f; x <= 2.f; x = std::nextafter(x, 3.f)) check(x), check(-x);
  const int64_t steps = 20'000'000;
  for (int64_t i = 0; i <= steps; ++i) check(float(-125.0 + 252.0 * double(i) / double(steps)));
  std::printf("  worst relative error %.3e at x = %.9g\n", worst, worst_at);
  EXPECT_LE(worst, 2.3e-7) << "at x = " << worst_at;
}

TEST(Exp2Fma, IntegersAreExactPowersOfTwo) {
  for (int j = -125; j <= 127; ++j) EXPECT_EQ(exp2_fma(float(j)), std::ldexp(1.f, j)) << j;
}

// Below the domain the result stays at 2^-125: a decay of ~2e-38, never a wrapped exponent.
TEST(Exp2Fma, BelowDomainGivesTwoToTheMinus125) {
  for (float x : {-125.f, -125.3f, -126.f, -200.f, -1e30f})
    EXPECT_EQ(exp2_fma(x), std::ldexp(1.f, -125)) << x;
}

}  // namespace
}  // namespace sambay
