// 2^x on the FMA units, for kernels whose exponentials would otherwise queue on the
// special-function unit (SFU: 16 results per clock per SM against 128 FMAs; an H200 does about
// 4e12 ex2.approx a second). Cody-Waite reduction x = j + f with j = rint(x), f in [-1/2, 1/2]:
// 2^f from a degree-5 minimax polynomial, 2^j added into the exponent bits. Ten instructions on
// the FMA and integer pipes (max, three adds, five FMAs, shift-add). Relative error at most
// 2.3e-7 (ex2.approx.f32 allows 2^-22 = 2.4e-7), checked by tests/test_exp2_fma.cpp; the same
// code runs on the host, so the test sees the device's bits (IEEE adds and fused multiply-adds,
// no denormals in range).
//
// Domain [-125, 127]: x below -125 gives 2^-125 (~2.4e-38) in place of smaller values (the
// scan's decays exp(delta A) <= 1 only ever lose that much). Finite x only.
#pragma once

#include <cmath>

#include "core/bf16.h"  // SAMBAY_HOST_DEVICE, float_bits, bits_float

namespace sambay {

SAMBAY_HOST_DEVICE inline float exp2_fma(float x) {
  x = fmaxf(x, -125.f);
  // 1.5 * 2^23: adding it leaves rint(x) in the low mantissa bits of `shifted` (round to nearest
  // even); subtracting it again gives rint(x) as a float, and x - rint(x) is exact.
  const float shifted = x + 12582912.f;
  const float f = x - (shifted - 12582912.f);
  float p = 1.327647245e-3f;
  p = fmaf(p, f, 9.675540961e-3f);
  p = fmaf(p, f, 5.550713092e-2f);
  p = fmaf(p, f, 2.402212024e-1f);
  p = fmaf(p, f, 6.931469440e-1f);
  p = fmaf(p, f, 1.f);
  // The low 9 bits of `shifted` hold rint(x) mod 512: shifted by 23 they add rint(x) to the
  // exponent of p (in [2^-1/2, 2^1/2]), which stays in [1, 254] over the domain.
  return bits_float(float_bits(p) + (float_bits(shifted) << 23));
}

}  // namespace sambay
