#include "kernels/rope.h"

#include <cmath>
#include <vector>

#include "core/check.h"

namespace sambay {
namespace {

// cos and sin of every (token, pair) angle (offset + t) * theta^(-2i/hd), [L, hd/2] each, in
// double: computed once per call instead of once per batch row and head.
struct RotationTable {
  std::vector<double> cos, sin;
};

RotationTable rotation_table(int64_t L, int64_t hd, double theta, int64_t offset) {
  SAMBAY_CHECK(hd % 2 == 0, "rope: head dim {} must be even", hd);
  SAMBAY_CHECK(theta > 0, "rope: theta {} must be positive", theta);
  SAMBAY_CHECK(offset >= 0, "rope: position offset {} must not be negative", offset);
  const int64_t half = hd / 2;
  RotationTable table{std::vector<double>(L * half), std::vector<double>(L * half)};
  for (int64_t i = 0; i < half; ++i) {
    const double frequency = std::pow(theta, -2.0 * i / hd);
    for (int64_t t = 0; t < L; ++t) {
      const double position = static_cast<double>(offset + t);
      table.cos[t * half + i] = std::cos(position * frequency);
      table.sin[t * half + i] = std::sin(position * frequency);
    }
  }
  return table;
}

// Applies to every head vector the rotation R(t) (sign = +1) or its transpose R(t)^T (sign = -1,
// the rotation by the opposite angle), adding into y when accumulate is set. Each pair is read
// completely before it is written, so y may alias x.
template <typename T>
void rotate(const T* x, T* y, int64_t B, int64_t L, int64_t heads, int64_t hd, double theta,
            int64_t offset, double sign, bool accumulate) {
  const RotationTable table = rotation_table(L, hd, theta, offset);
  const int64_t half = hd / 2;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * L; ++row) {
    const int64_t t = row % L;
    const double* cos = table.cos.data() + t * half;
    const double* sin = table.sin.data() + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      const T* xv = x + (row * heads + h) * hd;
      T* yv = y + (row * heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const double a = xv[i], b = xv[i + half];
        const double s = sign * sin[i];
        const double ya = a * cos[i] - b * s;
        const double yb = a * s + b * cos[i];
        yv[i] = static_cast<T>(accumulate ? yv[i] + ya : ya);
        yv[i + half] = static_cast<T>(accumulate ? yv[i + half] + yb : yb);
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_forward(const T* x, T* y, int64_t B, int64_t L, int64_t heads, int64_t hd, double theta,
                  int64_t position_offset) {
  rotate(x, y, B, L, heads, hd, theta, position_offset, +1.0, /*accumulate=*/false);
}

template <typename T>
void rope_backward(const T* dy, T* dx, int64_t B, int64_t L, int64_t heads, int64_t hd,
                   double theta, int64_t position_offset) {
  rotate(dy, dx, B, L, heads, hd, theta, position_offset, -1.0, /*accumulate=*/true);
}

template void rope_forward<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, double,
                                  int64_t);
template void rope_forward<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t,
                                   double, int64_t);
template void rope_backward<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t,
                                   double, int64_t);
template void rope_backward<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t,
                                    double, int64_t);

}  // namespace sambay
