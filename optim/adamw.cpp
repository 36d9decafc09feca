#include "optim/adamw.h"

#include "core/check.h"

#include <cmath>

namespace sambay {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& h, int64_t step) {
  SAMBAY_CHECK(step >= 1, "AdamW step counts from 1, got {}", step);
  SAMBAY_CHECK(n >= 0, "AdamW: negative length {}", n);
  const double decay = 1.0 - h.lr * h.weight_decay;
  const double m_correction = 1.0 - std::pow(h.beta1, double(step));
  const double v_correction = 1.0 - std::pow(h.beta2, double(step));
  // Per-element arithmetic in double; only the stored state is rounded to fp32.
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const double g = grad[i];
    const double mi = h.beta1 * m[i] + (1.0 - h.beta1) * g;
    const double vi = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
    const double m_hat = mi / m_correction;
    const double v_hat = vi / v_correction;
    param[i] = float(param[i] * decay - h.lr * m_hat / (std::sqrt(v_hat) + h.eps));
    m[i] = float(mi);
    v[i] = float(vi);
  }
}

}  // namespace sambay
