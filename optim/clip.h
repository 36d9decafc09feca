// Global gradient-norm clipping, as in torch.nn.utils.clip_grad_norm_:
//   norm = sqrt(sum over every gradient element of g^2), accumulated in double;
//   coefficient = min(1, max_norm / (norm + 1e-6)); the caller multiplies every gradient by it.
//
// Non-finite gradients are the caller's explicit check, made before clipping:
//   double norm = global_grad_norm(grads);
//   if (!all_finite(norm)) { skip this optimizer step and report it; }
//   else scale the gradients by clip_coefficient(norm, max_norm).
// A NaN or infinite element makes the norm NaN or infinite, so one check covers every element.
// clip_coefficient throws on a non-finite norm, so a forgotten check fails loudly instead of
// applying NaN (min(1, NaN) would silently be 1) or zeroing the gradients (max_norm / inf).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/cuda_stream.h"

namespace sambay {

double global_grad_norm(const std::vector<std::span<const float>>& grads);

// True when the norm is a finite number: the gradients are safe to apply.
bool all_finite(double norm);

// max_norm <= 0 disables clipping (coefficient 1). Throws if norm is NaN or infinite.
double clip_coefficient(double norm, double max_norm);

// ---- CUDA ----
// global_grad_norm over one flat fp32 device buffer: each thread sums squares in double, blocks
// reduce to a fixed number of partials, and one block adds the partials in a fixed order (so the
// result is bitwise reproducible on any GPU). Copies the norm back: SYNCHRONISES the stream.
double global_grad_norm_cuda(const float* grads, int64_t n, cudaStream_t stream);
// (On the GPU the clipping coefficient is applied by adamw_update_cuda as it reads the gradients.)

}  // namespace sambay
