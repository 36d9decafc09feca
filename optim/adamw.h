// AdamW (Loshchilov & Hutter) with PyTorch's update order, on fp32 master weights:
//   param -= lr * weight_decay * param                 (decoupled decay, before the Adam step)
//   m = beta1 * m + (1 - beta1) * grad
//   v = beta2 * v + (1 - beta2) * grad^2
//   param -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// param, grad, m, v [n]; m and v start at zero and are updated in place. step counts from 1.
// The caller picks h per parameter group: under muP++ vector-like parameters (norms, biases)
// and the embedding get weight_decay = 0 (see optim/mup.h).
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/cuda_stream.h"

namespace sambay {

struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay;
};

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWHyper& h, int64_t step);

// ---- CUDA ----
// One parameter group of the flat buffer for the multi-tensor update: elements
// [offset, offset + numel) use learning rate lr and weight decay weight_decay.
struct AdamWGroup {
  int64_t offset, numel;
  float lr, weight_decay;
};

// The AdamW step above over the whole flat fp32 buffer in ONE launch (pointers are device
// memory): groups [num_groups] is a device array sorted by offset, non-overlapping, inside [0, n);
// each block finds the groups of its tile by binary search. Elements in no group are left
// untouched. When param_bf16 != nullptr the same pass writes the bf16 compute copy of every
// updated parameter (round to nearest even). Arithmetic in fp32, with the bias corrections
// (1 - beta^step) and 1 - beta formed in double on the host. grad_scale multiplies every
// gradient as it is read (gradient clipping's coefficient, 1 without clipping): the same fp32
// product as scaling the buffer first, without that pass over it. Bytes: 30 per parameter
// (param, grad, m, v read; param, m, v, bf16 copy written); grad is left as it was.
void adamw_update_cuda(float* param, const float* grad, float* m, float* v, bf16* param_bf16,
                       int64_t n, const AdamWGroup* groups, int num_groups, double beta1,
                       double beta2, double eps, int64_t step, float grad_scale,
                       cudaStream_t stream);

}  // namespace sambay
