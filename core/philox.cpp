#include "core/philox.h"

#include "core/check.h"

namespace sambay {

uint64_t philox_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n) {
  SAMBAY_CHECK(n > 0, "philox_below needs n > 0");
  // Reject the top partial range so every residue is equally likely. Each retry uses a fresh
  // counter in the upper half of the index space, which data indices never reach.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (uint64_t attempt = 0;; ++attempt) {
    uint64_t counter = attempt == 0 ? index : (index ^ (attempt << 56) ^ (1ull << 63));
    auto r = philox4x32(seed, stream, counter);
    uint64_t v = (static_cast<uint64_t>(r[0]) << 32) | r[1];
    if (v < limit) return v % n;
  }
}

template <typename T>
void fill_normal(T* out, int64_t n, double mean, double std, uint64_t seed, uint64_t stream,
                 uint64_t offset) {
  // Each element depends only on its index, so threads may fill any part (a 3.8B-parameter
  // initialisation takes seconds instead of a minute).
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<T>(mean + std * philox_normal(seed, stream, offset + i));
}

template <typename T>
void fill_uniform(T* out, int64_t n, double lo, double hi, uint64_t seed, uint64_t stream,
                  uint64_t offset) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<T>(lo + (hi - lo) * philox_uniform(seed, stream, offset + i));
}

template void fill_normal<float>(float*, int64_t, double, double, uint64_t, uint64_t, uint64_t);
template void fill_normal<double>(double*, int64_t, double, double, uint64_t, uint64_t, uint64_t);
template void fill_uniform<float>(float*, int64_t, double, double, uint64_t, uint64_t, uint64_t);
template void fill_uniform<double>(double*, int64_t, double, double, uint64_t, uint64_t, uint64_t);

}  // namespace sambay
