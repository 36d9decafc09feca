#include "kernels/causal_conv1d.h"

#include "core/check.h"

#include <algorithm>
#include <vector>

namespace sambay {
namespace {

void check_shape(int64_t B, int64_t L, int64_t C, int64_t K) {
  SAMBAY_CHECK(B > 0 && L > 0 && C > 0 && K > 0,
               "causal_conv1d needs positive sizes, got B={} L={} C={} K={}", B, L, C, K);
}

// For every token (b, t), the first position its window may read: at most K-1 back, never before
// the row start, and never before the start of the token's document. A document is a maximal run
// of equal ids, the same rule by which the selective scan resets its state.
std::vector<int64_t> window_starts(const int32_t* doc, int64_t B, int64_t L, int64_t K) {
  std::vector<int64_t> first(B * L);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* ids = doc ? doc + b * L : nullptr;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t lowest = std::max<int64_t>(0, t - (K - 1));
      int64_t s = t;
      if (ids)
        while (s > lowest && ids[s - 1] == ids[s]) --s;
      else
        s = lowest;
      first[b * L + t] = s;
    }
  }
  return first;
}

}  // namespace

template <typename T>
void causal_conv1d_forward(const T* x, const T* weight, const T* bias, const int32_t* doc, T* y,
                           int64_t B, int64_t L, int64_t C, int64_t K) {
  check_shape(B, L, C, K);
  const std::vector<int64_t> first = window_starts(doc, B, L, K);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < B * L; ++row) {
    const int64_t b = row / L, t = row % L;
    T* yr = y + row * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = bias[c];
    for (int64_t s = first[row]; s <= t; ++s) {
      const int64_t k = s - t + (K - 1);  // tap that multiplies token s
      const T* xr = x + (b * L + s) * C;
      for (int64_t c = 0; c < C; ++c) yr[c] += weight[c * K + k] * xr[c];
    }
  }
}

template <typename T>
void causal_conv1d_backward(const T* dy, const T* x, const T* weight, const int32_t* doc, T* dx,
                            T* dweight, T* dbias, int64_t B, int64_t L, int64_t C, int64_t K) {
  check_shape(B, L, C, K);
  const std::vector<int64_t> first = window_starts(doc, B, L, K);

  // dx gathered per token s from the outputs t >= s whose windows read it. Window starts never
  // decrease with t, so once some t cannot see s no later one can.
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < B * L; ++row) {
      const int64_t b = row / L, s = row % L;
      T* dxr = dx + row * C;
      for (int64_t t = s; t < std::min(L, s + K); ++t) {
        if (first[b * L + t] > s) break;
        const int64_t k = s - t + (K - 1);
        const T* dyr = dy + (b * L + t) * C;
        for (int64_t c = 0; c < C; ++c) dxr[c] += weight[c * K + k] * dyr[c];
      }
    }
  }

  // dweight and dbias sum over every token; each thread owns a block of channels, so the sums
  // need no synchronisation and come out the same for any thread count.
  if (!dweight && !dbias) return;
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t width = std::min(kBlock, C - c0);
    std::vector<double> dw(width * K, 0.0), db(width, 0.0);
    for (int64_t row = 0; row < B * L; ++row) {
      const int64_t b = row / L, t = row % L;
      const T* dyr = dy + row * C + c0;
      for (int64_t j = 0; j < width; ++j) db[j] += dyr[j];
      for (int64_t s = first[row]; s <= t; ++s) {
        const int64_t k = s - t + (K - 1);
        const T* xr = x + (b * L + s) * C + c0;
        for (int64_t j = 0; j < width; ++j) dw[j * K + k] += double(dyr[j]) * xr[j];
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      if (dbias) dbias[c0 + j] += T(db[j]);
      if (dweight)
        for (int64_t k = 0; k < K; ++k) dweight[(c0 + j) * K + k] += T(dw[j * K + k]);
    }
  }
}

template void causal_conv1d_forward<float>(const float*, const float*, const float*, const int32_t*,
                                           float*, int64_t, int64_t, int64_t, int64_t);
template void causal_conv1d_forward<double>(const double*, const double*, const double*,
                                            const int32_t*, double*, int64_t, int64_t, int64_t,
                                            int64_t);
template void causal_conv1d_backward<float>(const float*, const float*, const float*,
                                            const int32_t*, float*, float*, float*, int64_t,
                                            int64_t, int64_t, int64_t);
template void causal_conv1d_backward<double>(const double*, const double*, const double*,
                                             const int32_t*, double*, double*, double*, int64_t,
                                             int64_t, int64_t, int64_t);

}  // namespace sambay
