#include "io/byte_tokenizer.h"

#include "core/check.h"

namespace sambay {

std::vector<int32_t> byte_encode(std::string_view text) {
  std::vector<int32_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

std::string byte_decode(std::span<const int32_t> tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t == kByteEod) continue;
    SAMBAY_CHECK(t >= 0 && t < 256, "token {} at position {} is not a byte token (0..256)", t, i);
    text.push_back(static_cast<char>(static_cast<unsigned char>(t)));
  }
  return text;
}

}  // namespace sambay
