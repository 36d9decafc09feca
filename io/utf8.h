// UTF-8 as PCRE2 and nlohmann-json both define it valid (RFC 3629: shortest form, no surrogates,
// at most U+10FFFF), decoded one character at a time by the tokenizer's hot loops.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sambay {

struct Utf8Char {
  uint32_t code_point;
  uint32_t length;  // bytes; 0: p does not start a valid character
};

// The character at p (< end).
inline Utf8Char decode_utf8(const uint8_t* p, const uint8_t* end) {
  const uint32_t b0 = p[0];
  if (b0 < 0x80) return {b0, 1};
  const auto cont = [&](ptrdiff_t i) { return p + i < end && (p[i] & 0xC0) == 0x80; };
  if (b0 < 0xC2) return {0, 0};  // a continuation byte, or an overlong two-byte form
  if (b0 < 0xE0) {
    if (!cont(1)) return {0, 0};
    return {(b0 & 0x1F) << 6 | (p[1] & 0x3Fu), 2};
  }
  if (b0 < 0xF0) {
    if (!cont(1) || !cont(2)) return {0, 0};
    const uint32_t cp = (b0 & 0x0F) << 12 | (p[1] & 0x3Fu) << 6 | (p[2] & 0x3Fu);
    if (cp < 0x800 || (cp >= 0xD800 && cp < 0xE000)) return {0, 0};
    return {cp, 3};
  }
  if (b0 < 0xF5) {
    if (!cont(1) || !cont(2) || !cont(3)) return {0, 0};
    const uint32_t cp =
        (b0 & 0x07) << 18 | (p[1] & 0x3Fu) << 12 | (p[2] & 0x3Fu) << 6 | (p[3] & 0x3Fu);
    if (cp < 0x10000 || cp > 0x10FFFF) return {0, 0};
    return {cp, 4};
  }
  return {0, 0};
}

}  // namespace sambay
