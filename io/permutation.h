// A pseudo-random permutation of [0, n) evaluated one element at a time, in O(1) time and memory:
// a balanced Feistel network on the smallest even-width bit domain 2^(2h) >= n, whose round
// function is Philox keyed by `key`, with cycle-walking (apply it again until the value lands
// back inside [0, n); since the domain is less than 4n, about 4 applications at most on
// average). Any key gives a bijection, so shuffling data needs no stored order.
#pragma once

#include <cstdint>

namespace sambay {

// The image of x (< n) under the permutation of [0, n) selected by key.
uint64_t permute_index(uint64_t x, uint64_t n, uint64_t key);

// A 64-bit key from (seed, a purpose tag < 256, a < 2^56, b), for deriving independent
// permutations: distinct arguments give unrelated keys.
uint64_t derive_key(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b);

}  // namespace sambay
