#include "kernels/rmsnorm.h"

#include <cmath>

#include "kernels/column_sum.h"

namespace sambay {

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d, T eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * d;
    double sq = 0;
    for (int64_t j = 0; j < d; ++j) sq += static_cast<double>(xr[j]) * xr[j];
    const double rs = 1.0 / std::sqrt(sq / d + static_cast<double>(eps));
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = static_cast<T>(xr[j] * rs * weight[j]);
    rstd[r] = static_cast<T>(rs);
  }
}

// With xhat = x * rstd and g = dy * weight (the gradient reaching xhat):
//   dx = rstd * (g - xhat * mean(g * xhat)),  dweight = sum_rows dy * xhat.
template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight,
                      int64_t rows, int64_t d) {
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* dyr = dy + r * d;
      const double rs = rstd[r];
      double gx_sum = 0;
      for (int64_t j = 0; j < d; ++j) gx_sum += static_cast<double>(dyr[j]) * weight[j] * xr[j];
      const double gx_mean = gx_sum * rs / d;
      for (int64_t j = 0; j < d; ++j) {
        const double g = static_cast<double>(dyr[j]) * weight[j];
        dx[r * d + j] += static_cast<T>(rs * (g - xr[j] * rs * gx_mean));
      }
    }
  }
  if (dweight)
    add_column_sums(dweight, rows, d, [&](int64_t r, int64_t j) {
      return static_cast<double>(dy[r * d + j]) * x[r * d + j] * rstd[r];
    });
}

template void rmsnorm_forward<float>(const float*, const float*, float*, float*, int64_t, int64_t,
                                     float);
template void rmsnorm_forward<double>(const double*, const double*, double*, double*, int64_t,
                                      int64_t, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, const float*,
                                      float*, float*, int64_t, int64_t);
template void rmsnorm_backward<double>(const double*, const double*, const double*, const double*,
                                       double*, double*, int64_t, int64_t);

}  // namespace sambay
