#include "optim/clip.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sambay {

double global_grad_norm(const std::vector<std::span<const float>>& grads) {
  // Partial sums over fixed blocks, added in a fixed order: the result does not depend on the
  // number of threads, so runs are reproducible bit for bit.
  constexpr int64_t kBlock = 1 << 14;
  double total = 0;
  for (std::span<const float> g : grads) {
    const int64_t n = static_cast<int64_t>(g.size());
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    std::vector<double> partial(blocks, 0.0);
#pragma omp parallel for
    for (int64_t b = 0; b < blocks; ++b) {
      double s = 0;
      for (int64_t i = b * kBlock; i < std::min(n, (b + 1) * kBlock); ++i)
        s += double(g[i]) * double(g[i]);
      partial[b] = s;
    }
    for (double s : partial) total += s;
  }
  return std::sqrt(total);
}

bool all_finite(double norm) { return std::isfinite(norm); }

double clip_coefficient(double norm, double max_norm) {
  SAMBAY_CHECK(all_finite(norm),
               "gradient norm is {}: check all_finite(norm) and skip the step before clipping",
               norm);
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace sambay
