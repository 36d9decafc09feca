#include "kernels/layernorm.h"

#include <cmath>

#include "kernels/column_sum.h"

namespace sambay {

template <typename T>
void layernorm_forward(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                       int64_t rows, int64_t d, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    T* yr = y + r * d;
    double sum = 0;
    for (int64_t j = 0; j < d; ++j) sum += xr[j];
    const double mu = sum / d;
    // Two passes (mean, then squared deviations) rather than E[x^2] - mean^2, which cancels
    // badly when the mean is large compared with the spread.
    double sq = 0;
    for (int64_t j = 0; j < d; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
    const double rs = 1.0 / std::sqrt(sq / d + static_cast<double>(eps));
    for (int64_t j = 0; j < d; ++j) yr[j] = static_cast<T>((xr[j] - mu) * rs * weight[j] + bias[j]);
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(rs);
  }
}

// With xhat = (x - mean) * rstd and g = dy * weight (the gradient reaching xhat):
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dweight = sum_rows dy * xhat,
//   dbias = sum_rows dy.
template <typename T>
void layernorm_backward(const T* dy, const T* x, const T* weight, const T* mean, const T* rstd,
                        T* dx, T* dweight, T* dbias, int64_t rows, int64_t d) {
  auto xhat = [&](int64_t r, int64_t j) {
    return (static_cast<double>(x[r * d + j]) - mean[r]) * rstd[r];
  };
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* dyr = dy + r * d;
      double g_sum = 0, gx_sum = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double g = static_cast<double>(dyr[j]) * weight[j];
        g_sum += g;
        gx_sum += g * xhat(r, j);
      }
      const double g_mean = g_sum / d, gx_mean = gx_sum / d;
      for (int64_t j = 0; j < d; ++j) {
        const double g = static_cast<double>(dyr[j]) * weight[j];
        dx[r * d + j] += static_cast<T>(rstd[r] * (g - g_mean - xhat(r, j) * gx_mean));
      }
    }
  }
  if (dweight)
    add_column_sums(dweight, rows, d,
                    [&](int64_t r, int64_t j) { return dy[r * d + j] * xhat(r, j); });
  if (dbias)
    add_column_sums(dbias, rows, d, [&](int64_t r, int64_t j) { return double(dy[r * d + j]); });
}

template void layernorm_forward<float>(const float*, const float*, const float*, float*, float*,
                                       float*, int64_t, int64_t, float);
template void layernorm_forward<double>(const double*, const double*, const double*, double*,
                                        double*, double*, int64_t, int64_t, double);
template void layernorm_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*, int64_t, int64_t);
template void layernorm_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int64_t,
                                         int64_t);

}  // namespace sambay
