// Helpers for the GPU tests of the dense ops: random bf16/fp32-representable data, uploads and
// downloads as double vectors, and initial contents for accumulated (+=) gradient buffers.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "tests/gpu_buffer.h"
#include "tests/test_util.h"

namespace sambay::testing {

// N(0, scale^2) values rounded to bf16: exactly what a bf16 upload holds.
inline std::vector<double> random_bf16(int64_t n, uint64_t seed, double scale = 1.0) {
  return round_to_bf16(random_normal(n, seed, scale));
}

// N(0, scale^2) values rounded to fp32.
inline std::vector<double> random_f32(int64_t n, uint64_t seed, double scale = 1.0) {
  return to_f64(to_f32(random_normal(n, seed, scale)));
}

inline double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return v.empty() ? 0.0 : std::sqrt(s / v.size());
}

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

inline std::vector<double> download_f64(const DeviceBuffer<bf16>& buffer) {
  return bf16_to_f64(buffer.download());
}
inline std::vector<double> download_f64(const DeviceBuffer<float>& buffer) {
  return to_f64(buffer.download());
}

}  // namespace sambay::testing
