// bfloat16 storage: the upper 16 bits of an IEEE float32, rounded to nearest, ties to even.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SAMBAY_HOST_DEVICE __host__ __device__
#else
#define SAMBAY_HOST_DEVICE
#endif

namespace sambay {

struct bf16 {
  uint16_t bits = 0;

  SAMBAY_HOST_DEVICE static bf16 from_bits(uint16_t b) {
    bf16 h;
    h.bits = b;
    return h;
  }
};

SAMBAY_HOST_DEVICE inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

SAMBAY_HOST_DEVICE inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// Round to nearest even. NaN stays NaN (quiet bit forced so rounding cannot turn it into Inf).
SAMBAY_HOST_DEVICE inline bf16 to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0)
    return bf16::from_bits(static_cast<uint16_t>((u >> 16) | 0x0040u));
  uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16::from_bits(static_cast<uint16_t>((u + rounding) >> 16));
}

SAMBAY_HOST_DEVICE inline float to_float(bf16 h) { return bits_float(static_cast<uint32_t>(h.bits) << 16); }

}  // namespace sambay
