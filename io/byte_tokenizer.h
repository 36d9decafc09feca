// Byte-level tokenizer for demos and tests: token b < 256 is the byte b, 256 ends a document.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sambay {

constexpr int32_t kByteEod = 256;
constexpr int64_t kByteVocab = 257;

// One token per byte (no end-of-document token is added).
std::vector<int32_t> byte_encode(std::string_view text);

// The bytes back; end-of-document tokens are dropped. Throws naming the position of a token
// outside [0, 257).
std::string byte_decode(std::span<const int32_t> tokens);

}  // namespace sambay
