// log(1 + u) for u in [0, 1] on the FMA units, for the scan's softplus (delta = max(v, 0) +
// log1p(e^-|v|) once per token and channel in four kernels, where log1pf's range reduction and
// special cases cost about 40 instructions). log1p(u) = u P(u) with P a degree-9 polynomial fitted
// to log1p(u) / u on [0, 1] for relative error (Lawson-weighted least squares on Chebyshev nodes);
// ten instructions. Relative error at most 1.7e-7 over [0, 1] (log1pf: about 1e-7), checked by
// tests/test_log1p_fma.cpp; plain IEEE fused multiply-adds, so the host computes the device's
// bits. Outside [0, 1] the result is meaningless.
#pragma once

#include <cmath>

#include "core/bf16.h"  // SAMBAY_HOST_DEVICE

namespace sambay {

SAMBAY_HOST_DEVICE inline float log1p_fma(float u) {
  float p = -3.243980929e-3f;
  p = fmaf(p, u, 1.985126175e-2f);
  p = fmaf(p, u, -5.695915967e-2f);
  p = fmaf(p, u, 1.060361713e-1f);
  p = fmaf(p, u, -1.530556977e-1f);
  p = fmaf(p, u, 1.967593133e-1f);
  p = fmaf(p, u, -2.495413274e-1f);
  p = fmaf(p, u, 3.332996368e-1f);
  p = fmaf(p, u, -4.999990165e-1f);
  p = fmaf(p, u, 1.f);
  return p * u;
}

}  // namespace sambay
