#include "kernels/linear.h"

#include "kernels/gemm.h"

namespace sambay {

template <typename T>
void linear_forward(const T* x, const T* weight, const T* bias, T* y, int64_t n, int64_t in,
                    int64_t out) {
  gemm<T>(false, true, n, out, in, T(1), x, in, weight, in, T(0), y, out);
  if (!bias) return;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) y[i * out + o] += bias[o];
}

template <typename T>
void linear_backward(const T* dy, const T* x, const T* weight, T* dx, T* dweight, T* dbias,
                     int64_t n, int64_t in, int64_t out) {
  if (dx) gemm<T>(false, false, n, in, out, T(1), dy, out, weight, in, T(1), dx, in);
  if (dweight) gemm<T>(true, false, out, in, n, T(1), dy, out, x, in, T(1), dweight, in);
  if (dbias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) dbias[o] += dy[i * out + o];
}

template void linear_forward<float>(const float*, const float*, const float*, float*, int64_t,
                                    int64_t, int64_t);
template void linear_forward<double>(const double*, const double*, const double*, double*,
                                     int64_t, int64_t, int64_t);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*,
                                     float*, int64_t, int64_t, int64_t);
template void linear_backward<double>(const double*, const double*, const double*, double*,
                                      double*, double*, int64_t, int64_t, int64_t);

}  // namespace sambay
