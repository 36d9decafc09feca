#include "kernels/rmsnorm.h"

#include <cmath>
#include <vector>

#include "kernels/column_sum.h"

namespace sambay {

template <typename T>
void rmsnorm_forward_sharded(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d,
                             int64_t d_full, T eps, const RowSumReducer& sum_over_shards) {
  std::vector<double> sq(rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t j = 0; j < d; ++j) acc += static_cast<double>(x[r * d + j]) * x[r * d + j];
    sq[r] = acc;
  }
  if (sum_over_shards) sum_over_shards(sq.data(), rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const double rs = 1.0 / std::sqrt(sq[r] / d_full + static_cast<double>(eps));
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = static_cast<T>(x[r * d + j] * rs * weight[j]);
    rstd[r] = static_cast<T>(rs);
  }
}

template <typename T>
void rmsnorm_forward(const T* x, const T* weight, T* y, T* rstd, int64_t rows, int64_t d, T eps) {
  rmsnorm_forward_sharded(x, weight, y, rstd, rows, d, d, eps, RowSumReducer{});
}

// With xhat = x * rstd and g = dy * weight (the gradient reaching xhat):
//   dx = rstd * (g - xhat * mean(g * xhat)),  dweight = sum_rows dy * xhat,
// the mean taken over all d_full columns.
template <typename T>
void rmsnorm_backward_sharded(const T* dy, const T* x, const T* weight, const T* rstd, T* dx,
                              T* dweight, int64_t rows, int64_t d, int64_t d_full,
                              const RowSumReducer& sum_over_shards) {
  if (dx) {
    std::vector<double> gx(rows);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      double acc = 0;
      for (int64_t j = 0; j < d; ++j)
        acc += static_cast<double>(dy[r * d + j]) * weight[j] * x[r * d + j];
      gx[r] = acc;
    }
    if (sum_over_shards) sum_over_shards(gx.data(), rows);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * d;
      const T* dyr = dy + r * d;
      const double rs = rstd[r];
      const double gx_mean = gx[r] * rs / d_full;
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

template <typename T>
void rmsnorm_backward(const T* dy, const T* x, const T* weight, const T* rstd, T* dx, T* dweight,
                      int64_t rows, int64_t d) {
  rmsnorm_backward_sharded(dy, x, weight, rstd, dx, dweight, rows, d, d, RowSumReducer{});
}

template void rmsnorm_forward<float>(const float*, const float*, float*, float*, int64_t, int64_t,
                                     float);
template void rmsnorm_forward<double>(const double*, const double*, double*, double*, int64_t,
                                      int64_t, double);
template void rmsnorm_backward<float>(const float*, const float*, const float*, const float*,
                                      float*, float*, int64_t, int64_t);
template void rmsnorm_backward<double>(const double*, const double*, const double*, const double*,
                                       double*, double*, int64_t, int64_t);
template void rmsnorm_forward_sharded<float>(const float*, const float*, float*, float*, int64_t,
                                             int64_t, int64_t, float, const RowSumReducer&);
template void rmsnorm_forward_sharded<double>(const double*, const double*, double*, double*,
                                              int64_t, int64_t, int64_t, double,
                                              const RowSumReducer&);
template void rmsnorm_backward_sharded<float>(const float*, const float*, const float*,
                                              const float*, float*, float*, int64_t, int64_t,
                                              int64_t, const RowSumReducer&);
template void rmsnorm_backward_sharded<double>(const double*, const double*, const double*,
                                               const double*, double*, double*, int64_t, int64_t,
                                               int64_t, const RowSumReducer&);

}  // namespace sambay
