#include "kernels/gmu.h"

#include <cmath>

#include "kernels/column_sum.h"
#include "kernels/silu_scalar.h"

namespace sambay {

template <typename T>
void gmu_forward(const T* m, const T* g, const T* norm_weight, T* out, T* rstd, int64_t rows,
                 int64_t E, T eps) {
  auto gated = [&](int64_t i) { return static_cast<double>(m[i]) * scalar::silu(g[i]); };
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* outr = out + r * E;
    double sq = 0;
    for (int64_t j = 0; j < E; ++j) {
      const double a = gated(r * E + j);
      sq += a * a;
      outr[j] = static_cast<T>(a);
    }
    if (!norm_weight) continue;
    // nGMU: recompute the gated value in double rather than read back its rounded copy in out.
    const double rs = 1.0 / std::sqrt(sq / E + static_cast<double>(eps));
    for (int64_t j = 0; j < E; ++j)
      outr[j] = static_cast<T>(gated(r * E + j) * rs * norm_weight[j]);
    rstd[r] = static_cast<T>(rs);
  }
}

// a = m * silu(g) is recomputed rather than stored. Its gradient da is dout for the GMU; for the
// nGMU it is the RMSNorm backward, rstd * (w*dout - ahat * mean(w*dout * ahat)) with
// ahat = a * rstd. Then dm = da * silu(g) and dg = da * m * silu'(g).
template <typename T>
void gmu_backward(const T* dout, const T* m, const T* g, const T* norm_weight, const T* rstd, T* dm,
                  T* dg, T* dnorm_weight, int64_t rows, int64_t E) {
  auto gated = [&](int64_t r, int64_t j) {
    return static_cast<double>(m[r * E + j]) * scalar::silu(g[r * E + j]);
  };
  if (dm || dg) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* doutr = dout + r * E;
      double rs = 1, proj_mean = 0;
      if (norm_weight) {
        rs = rstd[r];
        double proj = 0;
        for (int64_t j = 0; j < E; ++j)
          proj += static_cast<double>(doutr[j]) * norm_weight[j] * gated(r, j) * rs;
        proj_mean = proj / E;
      }
      for (int64_t j = 0; j < E; ++j) {
        double da = doutr[j];
        if (norm_weight) da = rs * (da * norm_weight[j] - gated(r, j) * rs * proj_mean);
        const int64_t i = r * E + j;
        if (dm) dm[i] += static_cast<T>(da * scalar::silu(g[i]));
        if (dg) dg[i] += static_cast<T>(da * m[i] * scalar::silu_grad(g[i]));
      }
    }
  }
  if (norm_weight && dnorm_weight)
    add_column_sums(dnorm_weight, rows, E, [&](int64_t r, int64_t j) {
      return static_cast<double>(dout[r * E + j]) * gated(r, j) * rstd[r];
    });
}

template void gmu_forward<float>(const float*, const float*, const float*, float*, float*, int64_t,
                                 int64_t, float);
template void gmu_forward<double>(const double*, const double*, const double*, double*, double*,
                                  int64_t, int64_t, double);
template void gmu_backward<float>(const float*, const float*, const float*, const float*,
                                  const float*, float*, float*, float*, int64_t, int64_t);
template void gmu_backward<double>(const double*, const double*, const double*, const double*,
                                   const double*, double*, double*, double*, int64_t, int64_t);

}  // namespace sambay
