// Comparing GPU results with the CPU reference: a normwise relative error (the test standard)
// plus a worst-element check, so that a handful of wrong or unwritten elements in a large
// tensor cannot hide in the norm.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/gpu_buffer.h"
#include "tests/test_util.h"

namespace sambay::testing {

// got vs ref: ||got - ref|| / ||ref|| < tolerance and max|got - ref| < 2 * tolerance * max|ref|
// (bf16 rounding is relative to each element, so the worst element may be off by about twice
// the typical one).
inline void expect_close(const std::string& what, const std::vector<double>& got,
                         const std::vector<double>& ref, double tolerance) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  const double norm_error = relative_error(got, ref);
  double worst = 0, largest = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::abs(got[i] - ref[i]);
    if (!std::isnan(worst) && !(e <= worst)) worst = e, worst_at = i;  // a NaN stays the worst
    largest = std::max(largest, std::abs(ref[i]));
  }
  // Printed so that the margin to the tolerance shows in the log.
  std::printf("  %-10s relative error %.2e, worst element %.2e of the largest (tolerance %.0e)\n",
              what.c_str(), norm_error, largest > 0 ? worst / largest : worst, tolerance);
  EXPECT_LT(norm_error, tolerance) << what << ": normwise relative error";
  EXPECT_LE(worst, 2 * tolerance * largest)
      << what << ": element " << worst_at << " is " << got[worst_at] << ", expected "
      << ref[worst_at] << " (largest |expected| " << largest << ")";
}

// got - before: what a backward added into a gradient buffer that held `before`.
inline std::vector<double> minus(const std::vector<double>& got,
                                 const std::vector<double>& before) {
  std::vector<double> d(got.size());
  for (size_t i = 0; i < got.size(); ++i) d[i] = got[i] - before[i];
  return d;
}

// Root mean square, for scaling the initial contents of gradient buffers to the gradient.
inline double rms(const std::vector<double>& v) {
  double s = 0;
  for (double a : v) s += a * a;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

// Values as an fp32 upload holds them.
inline std::vector<double> round_to_f32(const std::vector<double>& v) { return to_f64(to_f32(v)); }

inline std::vector<double> download_f64(const DeviceBuffer<bf16>& b) {
  return bf16_to_f64(b.download());
}
inline std::vector<double> download_f64(const DeviceBuffer<float>& b) {
  return to_f64(b.download());
}

}  // namespace sambay::testing
