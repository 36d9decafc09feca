// Token embedding: a row gather, and its scatter-add backward.
//   tokens [n] (each in [0, vocab)), table [vocab, d], out [n, d]
#pragma once

#include <cstdint>

namespace sambay {

// Throws naming the position and value if a token is outside [0, vocab).
template <typename T>
void embedding_forward(const int32_t* tokens, const T* table, T* out, int64_t n, int64_t vocab,
                       int64_t d);

// dtable[tokens[i]] += dout[i] (rows repeated in tokens accumulate).
template <typename T>
void embedding_backward(const int32_t* tokens, const T* dout, T* dtable, int64_t n, int64_t vocab,
                        int64_t d);

}  // namespace sambay
