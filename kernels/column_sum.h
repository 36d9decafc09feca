// Internal helper for the backward passes of per-row ops whose parameters are shared by every
// row (norm weights and biases): out[j] += sum over rows r of term(r, j).
// Threads own disjoint blocks of columns, so no two write the same output and no atomics are
// needed; each block walks the rows in order, which keeps the reads contiguous. Sums run in
// double so that fp32 gradients do not lose precision over many rows.
#pragma once

#include <algorithm>
#include <cstdint>

namespace sambay {

template <typename T, typename Term>
void add_column_sums(T* out, int64_t rows, int64_t d, Term term) {
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
    const int64_t j1 = std::min(d, j0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += term(r, j);
    for (int64_t j = j0; j < j1; ++j) out[j] += static_cast<T>(acc[j - j0]);
  }
}

}  // namespace sambay
