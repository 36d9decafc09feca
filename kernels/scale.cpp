#include "kernels/scale.h"

namespace sambay {

template <typename T>
void scale_forward(const T* x, T s, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = s * x[i];
}

template void scale_forward<float>(const float*, float, float*, int64_t);
template void scale_forward<double>(const double*, double, double*, int64_t);

}  // namespace sambay
