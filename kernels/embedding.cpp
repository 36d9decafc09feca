#include "kernels/embedding.h"

#include <algorithm>

#include "core/check.h"

namespace sambay {

// Validates every token before anything is read or written, so a bad batch fails cleanly.
static void check_tokens(const int32_t* tokens, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab)
      fail("embedding: token {} at position {} is outside the vocabulary [0, {})", tokens[i], i,
           vocab);
}

template <typename T>
void embedding_forward(const int32_t* tokens, const T* table, T* out, int64_t n, int64_t vocab,
                       int64_t d) {
  check_tokens(tokens, n, vocab);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) std::copy_n(table + tokens[i] * d, d, out + i * d);
}

template <typename T>
void embedding_backward(const int32_t* tokens, const T* dout, T* dtable, int64_t n, int64_t vocab,
                        int64_t d) {
  check_tokens(tokens, n, vocab);
  // Tokens repeat, so rows of dtable receive several updates: threads split the columns instead
  // of the tokens, and each walks all tokens in order over its own column range.
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < d; j0 += kBlock) {
    const int64_t j1 = std::min(d, j0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      T* row = dtable + tokens[i] * d;
      for (int64_t j = j0; j < j1; ++j) row[j] += dout[i * d + j];
    }
  }
}

template void embedding_forward<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                       int64_t);
template void embedding_forward<double>(const int32_t*, const double*, double*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                        int64_t);
template void embedding_backward<double>(const int32_t*, const double*, double*, int64_t, int64_t,
                                         int64_t);

}  // namespace sambay
