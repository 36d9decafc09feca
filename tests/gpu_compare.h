// Helpers of the GPU tests: data as bf16/fp32 uploads hold it, initial contents for gradient
// buffers that kernels add into, downloads as double vectors, and the comparison with the CPU
// reference: a normwise relative error (the test standard) plus a worst-element check, so that a
// handful of wrong or unwritten elements in a large tensor cannot hide in the norm.
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

// N(0, scale^2) values rounded to bf16: exactly what a bf16 upload holds.
inline std::vector<double> random_bf16(int64_t n, uint64_t seed, double scale = 1.0) {
  return round_to_bf16(random_normal(n, seed, scale));
}

// N(0, scale^2) values rounded to fp32.
inline std::vector<double> random_f32(int64_t n, uint64_t seed, double scale = 1.0) {
  return to_f64(to_f32(random_normal(n, seed, scale)));
}

// Values as an fp32 upload holds them.
inline std::vector<double> round_to_f32(const std::vector<double>& v) { return to_f64(to_f32(v)); }

// Initial contents for a gradient buffer that a kernel adds into: random, with the RMS of the
// gradient it will receive, so that both a missing add and an overwrite fail the comparison.
inline std::vector<double> initial_bf16_like(const std::vector<double>& grad, uint64_t seed) {
  return random_bf16(static_cast<int64_t>(grad.size()), seed, std::max(rms(grad), 1e-3));
}
inline std::vector<double> initial_f32_like(const std::vector<double>& grad, uint64_t seed) {
  return random_f32(static_cast<int64_t>(grad.size()), seed, std::max(rms(grad), 1e-3));
}

inline std::vector<double> plus(std::vector<double> a, const std::vector<double>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

inline std::vector<double> download_f64(const DeviceBuffer<bf16>& b) {
  return bf16_to_f64(b.download());
}
inline std::vector<double> download_f64(const DeviceBuffer<float>& b) {
  return to_f64(b.download());
}

// Contiguous documents of lengths cycling through short and long ones (1 to 90 tokens), shifted
// per batch row, so that tiles hold several documents and boundaries fall anywhere. [B, L].
inline std::vector<int32_t> make_docs(int64_t B, int64_t L) {
  const int lengths[] = {1, 5, 40, 13, 90, 2, 64, 33};
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b) {
    int32_t id = 0;
    int left = lengths[b % 8];
    for (int64_t t = 0; t < L; ++t) {
      if (left == 0) {
        ++id;
        left = lengths[(id + b) % 8];
      }
      doc[b * L + t] = id;
      --left;
    }
  }
  return doc;
}

}  // namespace sambay::testing
