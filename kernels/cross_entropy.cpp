#include "kernels/cross_entropy.h"

#include "core/check.h"
#include "kernels/gemm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace sambay {

// Validates shapes and targets up front, so a bad batch fails before any work is done.
static void check_arguments(const int32_t* targets, int64_t n, int64_t d, int64_t V,
                            int64_t chunk) {
  SAMBAY_CHECK(n >= 0 && d >= 1 && V >= 1, "bad shape n={} d={} V={}", n, d, V);
  SAMBAY_CHECK(chunk >= 1, "vocabulary chunk must be >= 1, got {}", chunk);
  for (int64_t i = 0; i < n; ++i)
    if (targets[i] >= V) fail("cross-entropy: target {} at row {} is >= vocabulary size {}",
                              targets[i], i, V);
}

// logits[n, cols] = logit_scale * h[n, d] w[first .. first + cols, d]^T, each value rounded to
// bf16 (through fp32, as the GPU rounds its fp32 accumulation) when asked.
template <typename T>
static void chunk_logits(const T* h, const T* w, T* logits, int64_t n, int64_t d, int64_t first,
                         int64_t cols, T logit_scale, LogitRounding rounding) {
  gemm<T>(false, true, n, cols, d, logit_scale, h, d, w + first * d, d, T(0), logits, cols);
  if (rounding == LogitRounding::bf16)
    for (int64_t i = 0; i < n * cols; ++i)
      logits[i] = T(to_float(to_bf16(static_cast<float>(logits[i]))));
}

template <typename T>
double tied_cross_entropy_forward(const T* h, const T* w, const int32_t* targets, T* lse,
                                  int64_t n, int64_t d, int64_t V, T logit_scale, int64_t chunk,
                                  int64_t* valid_rows, LogitRounding rounding) {
  check_arguments(targets, n, d, V, chunk);
  chunk = std::min(chunk, V);
  std::vector<T> logits(n * chunk);
  // Online log-sum-exp per row: running max and the sum of exp(logit - max), both in double.
  std::vector<double> row_max(n, -std::numeric_limits<double>::infinity());
  std::vector<double> row_sum(n, 0.0);
  std::vector<double> target_logit(n, 0.0);

  for (int64_t first = 0; first < V; first += chunk) {
    const int64_t cols = std::min(chunk, V - first);
    chunk_logits(h, w, logits.data(), n, d, first, cols, logit_scale, rounding);
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) {
      if (targets[i] < 0) continue;
      const T* row = logits.data() + i * cols;
      double chunk_max = row[0];
      for (int64_t c = 1; c < cols; ++c) chunk_max = std::max(chunk_max, double(row[c]));
      const double new_max = std::max(row_max[i], chunk_max);
      double sum = row_sum[i] * std::exp(row_max[i] - new_max);  // exp(-inf) = 0 on chunk 0
      for (int64_t c = 0; c < cols; ++c) sum += std::exp(double(row[c]) - new_max);
      row_max[i] = new_max;
      row_sum[i] = sum;
      const int64_t t = targets[i];
      if (t >= first && t < first + cols) target_logit[i] = row[t - first];
    }
  }

  double loss = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < 0) {
      lse[i] = T(0);
      continue;
    }
    const double row_lse = row_max[i] + std::log(row_sum[i]);
    lse[i] = T(row_lse);
    loss += row_lse - target_logit[i];
    ++valid;
  }
  if (valid_rows) *valid_rows = valid;
  return loss;
}

template <typename T>
void tied_cross_entropy_backward(const T* h, const T* w, const int32_t* targets, const T* lse,
                                 T* dh, T* dw, int64_t n, int64_t d, int64_t V, T logit_scale,
                                 int64_t chunk, T grad_scale, LogitRounding rounding) {
  check_arguments(targets, n, d, V, chunk);
  if (!dh && !dw) return;
  chunk = std::min(chunk, V);
  // d(loss)/d(logit) = softmax - onehot(target); the chain through logit = s <h, e> brings s.
  const double scale = double(logit_scale) * double(grad_scale);
  std::vector<T> grad_logits(n * chunk);

  for (int64_t first = 0; first < V; first += chunk) {
    const int64_t cols = std::min(chunk, V - first);
    chunk_logits(h, w, grad_logits.data(), n, d, first, cols, logit_scale, rounding);
    // Turn the recomputed logits into d(scaled loss)/d(logits) in place; ignored rows get 0.
#pragma omp parallel for
    for (int64_t i = 0; i < n; ++i) {
      T* row = grad_logits.data() + i * cols;
      if (targets[i] < 0) {
        std::fill(row, row + cols, T(0));
        continue;
      }
      for (int64_t c = 0; c < cols; ++c) {
        double p = std::exp(double(row[c]) - double(lse[i]));
        if (first + c == targets[i]) p -= 1.0;
        row[c] = T(p * scale);
      }
    }
    // dh[n, d] += G[n, cols] w_chunk[cols, d];  dw_chunk[cols, d] += G^T h[n, d]
    if (dh)
      gemm<T>(false, false, n, d, cols, T(1), grad_logits.data(), cols, w + first * d, d, T(1),
              dh, d);
    if (dw)
      gemm<T>(true, false, cols, d, n, T(1), grad_logits.data(), cols, h, d, T(1),
              dw + first * d, d);
  }
}

int64_t cross_entropy_chunks(const CrossEntropyPlan& p) {
  SAMBAY_CHECK(p.V >= 1 && p.chunk >= 1, "cross-entropy: V = {} and chunk = {} must be >= 1", p.V,
               p.chunk);
  return (p.V + p.chunk - 1) / p.chunk;
}

CrossEntropyWorkspace cross_entropy_workspace(const CrossEntropyPlan& p) {
  SAMBAY_CHECK(p.n >= 0 && p.d >= 1, "cross-entropy: bad shape n={} d={}", p.n, p.d);
  const int64_t chunks = cross_entropy_chunks(p);
  SAMBAY_CHECK(p.kept_chunks >= 0 && p.kept_chunks <= chunks,
               "cross-entropy: kept_chunks = {} is outside [0, {}] (V = {}, chunk = {})",
               p.kept_chunks, chunks, p.V, p.chunk);
  auto rounded = [](int64_t bytes) { return static_cast<size_t>((bytes + 255) / 256 * 256); };
  const int64_t cols = std::min(p.chunk, p.V);  // no slot is wider than the vocabulary
  CrossEntropyWorkspace w;
  w.slot_bytes = rounded(2 * p.n * cols);
  size_t at = 0;
  auto take = [&](size_t bytes) {
    const size_t offset = at;
    at += bytes;
    return offset;
  };
  w.kept = take(w.slot_bytes * p.kept_chunks);
  w.shared = take(p.kept_chunks < chunks ? w.slot_bytes : 0);
  w.row_max = take(rounded(4 * p.n));
  w.row_sum = take(rounded(4 * p.n));
  w.target_logit = take(rounded(4 * p.n));
  w.result = take(256);
  w.dh = take(rounded(4 * p.n * p.d));
  w.bytes = at;
  return w;
}

template double tied_cross_entropy_forward<float>(const float*, const float*, const int32_t*,
                                                  float*, int64_t, int64_t, int64_t, float,
                                                  int64_t, int64_t*, LogitRounding);
template double tied_cross_entropy_forward<double>(const double*, const double*, const int32_t*,
                                                   double*, int64_t, int64_t, int64_t, double,
                                                   int64_t, int64_t*, LogitRounding);
template void tied_cross_entropy_backward<float>(const float*, const float*, const int32_t*,
                                                 const float*, float*, float*, int64_t, int64_t,
                                                 int64_t, float, int64_t, float, LogitRounding);
template void tied_cross_entropy_backward<double>(const double*, const double*, const int32_t*,
                                                  const double*, double*, double*, int64_t,
                                                  int64_t, int64_t, double, int64_t, double,
                                                  LogitRounding);

}  // namespace sambay
