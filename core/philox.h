// Philox4x32-10 counter-based RNG (Salmon et al., SC'11).
// A value depends only on (seed, stream, index), never on how many values were drawn before or
// on which rank draws it: initialisation and data order are the same for any parallel layout.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace sambay {

// Four 32-bit outputs for the 128-bit counter (index, stream) under the 64-bit key seed.
inline std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t index) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(index), c1 = static_cast<uint32_t>(index >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
    uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = static_cast<uint32_t>(p1);
    uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += kWeyl0, k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

// Uniform in (0, 1): never exactly 0, so log() is safe.
inline double uniform_from_bits(uint32_t hi, uint32_t lo) {
  uint64_t bits53 = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return (static_cast<double>(bits53) + 0.5) * (1.0 / 9007199254740992.0);
}

// Element `index` of the uniform stream (seed, stream).
inline double philox_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  auto r = philox4x32(seed, stream, index);
  return uniform_from_bits(r[0], r[1]);
}

// Element `index` of the standard-normal stream (seed, stream), by Box-Muller on one counter.
inline double philox_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  auto r = philox4x32(seed, stream, index);
  double u1 = uniform_from_bits(r[0], r[1]);
  double u2 = uniform_from_bits(r[2], r[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

// Uniform integer in [0, n) for element `index` of stream (seed, stream); unbiased by rejection
// on successive sub-counters.
uint64_t philox_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n);

// Fill helpers: element i of out gets element (offset + i) of the stream.
template <typename T>
void fill_normal(T* out, int64_t n, double mean, double std, uint64_t seed, uint64_t stream,
                 uint64_t offset = 0);
template <typename T>
void fill_uniform(T* out, int64_t n, double lo, double hi, uint64_t seed, uint64_t stream,
                  uint64_t offset = 0);

}  // namespace sambay
