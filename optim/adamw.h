// AdamW (Loshchilov & Hutter) with PyTorch's update order, on fp32 master weights:
//   param -= lr * weight_decay * param                 (decoupled decay, before the Adam step)
//   m = beta1 * m + (1 - beta1) * grad
//   v = beta2 * v + (1 - beta2) * grad^2
//   param -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// param, grad, m, v [n]; m and v start at zero and are updated in place. step counts from 1.
// Vector-like parameters (norms, biases) usually get weight_decay = 0: the caller picks h per
// parameter group (see optim/mup.h).
#pragma once

#include <cstdint>

namespace sambay {

struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
};

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& h, int64_t step);

}  // namespace sambay
