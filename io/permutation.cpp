#include "io/permutation.h"

#include "core/check.h"
#include "core/philox.h"

#include <bit>

namespace sambay {

namespace {

constexpr int kRounds = 6;  // 4 already make a strong pseudo-random permutation (Luby-Rackoff)

uint64_t feistel(uint64_t x, int half_bits, uint64_t key) {
  const uint64_t mask = half_bits == 32 ? 0xffffffffull : (uint64_t{1} << half_bits) - 1;
  uint64_t left = x >> half_bits, right = x & mask;
  for (int round = 0; round < kRounds; ++round) {
    uint64_t f = philox4x32(key, static_cast<uint64_t>(round), right)[0] & mask;
    uint64_t next_right = left ^ f;
    left = right;
    right = next_right;
  }
  return (left << half_bits) | right;
}

}  // namespace

uint64_t permute_index(uint64_t x, uint64_t n, uint64_t key) {
  SAMBAY_CHECK(x < n, "permute_index: {} is outside [0, {})", x, n);
  // Bits needed for n - 1, rounded up to an even count (at least 2, so both halves exist).
  int bits = n <= 1 ? 0 : 64 - std::countl_zero(n - 1);
  int half_bits = bits <= 2 ? 1 : (bits + 1) / 2;
  do {
    x = feistel(x, half_bits, key);
  } while (x >= n);
  return x;
}

uint64_t derive_key(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b) {
  SAMBAY_CHECK(tag < 256 && a < (uint64_t{1} << 56), "derive_key: tag {} or a {} too large", tag,
               a);
  auto r = philox4x32(seed, (a << 8) | tag, b);
  return (static_cast<uint64_t>(r[0]) << 32) | r[1];
}

}  // namespace sambay
