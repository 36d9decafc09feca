#include "kernels/activations.h"

#include "kernels/silu_scalar.h"

namespace sambay {

template <typename T>
void silu_forward(const T* x, T* y, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = scalar::silu(x[i]);
}

template <typename T>
void silu_backward(const T* dy, const T* x, T* dx, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] += dy[i] * scalar::silu_grad(x[i]);
}

template <typename T>
void swiglu_forward(const T* h, T* out, int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = h + r * 2 * F;
    const T* value = gate + F;
    for (int64_t j = 0; j < F; ++j) out[r * F + j] = value[j] * scalar::silu(gate[j]);
  }
}

template <typename T>
void swiglu_backward(const T* dout, const T* h, T* dh, int64_t rows, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = h + r * 2 * F;
    const T* value = gate + F;
    T* dgate = dh + r * 2 * F;
    T* dvalue = dgate + F;
    for (int64_t j = 0; j < F; ++j) {
      const T d = dout[r * F + j];
      dgate[j] += d * value[j] * scalar::silu_grad(gate[j]);
      dvalue[j] += d * scalar::silu(gate[j]);
    }
  }
}

template void silu_forward<float>(const float*, float*, int64_t);
template void silu_forward<double>(const double*, double*, int64_t);
template void silu_backward<float>(const float*, const float*, float*, int64_t);
template void silu_backward<double>(const double*, const double*, double*, int64_t);
template void swiglu_forward<float>(const float*, float*, int64_t, int64_t);
template void swiglu_forward<double>(const double*, double*, int64_t, int64_t);
template void swiglu_backward<float>(const float*, const float*, float*, int64_t, int64_t);
template void swiglu_backward<double>(const double*, const double*, double*, int64_t, int64_t);

}  // namespace sambay
