// o200k_base's pre-tokenisation pattern as code: the matcher that cuts text into the pieces the
// BPE merges, without a regex engine. It is the pattern's exact semantics (leftmost alternative,
// greedy quantifiers with PCRE2's backtracking order) over the seven character classes the
// pattern names, read per code point from PCRE2 itself at construction, so that its Unicode
// version is the regex's. Where the text is not valid UTF-8 it answers nothing and the caller
// asks PCRE2, so that every input splits exactly as the regex splits it; test_o200k_split
// checks this on the multilingual corpus and on random strings.
//
// Why: the regex was a fifth of the tokenizer's time (a JIT call per piece of about four bytes);
// this is a few table lookups per character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace sambay {

// tiktoken's o200k_base pattern in PCRE2 syntax (the class spellings are shared with the
// matcher's tables). tiktoken's regex engine's \s is Unicode White_Space; PCRE2's \s also takes
// U+180E, so whitespace is spelled out: [\t-\r\x{85}\p{Z}] is White_Space exactly.
extern const char* const kO200kPattern;

class O200kSplitter {
 public:
  // Asks PCRE2 the class of every code point (a few tens of milliseconds).
  O200kSplitter();

  // The end of the match of kO200kPattern that starts at `at` (< text.size()), or 0 when the
  // characters it had to look at are not all valid UTF-8: then PCRE2 decides.
  size_t match(std::string_view text, size_t at) const;

  // The classes of one code point (bits below), for tests.
  uint8_t classes_of(uint32_t code_point) const;

  // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]: may start a word (the pattern's "upper" run)
  static constexpr uint8_t kUpper = 1;
  // [\p{Ll}\p{Lm}\p{Lo}\p{M}]: may continue one (its "lower" run)
  static constexpr uint8_t kLower = 2;
  static constexpr uint8_t kLetter = 4;   // \p{L}
  static constexpr uint8_t kNumber = 8;   // \p{N}
  static constexpr uint8_t kSpace = 16;   // [\t-\r\x{85}\p{Z}]
  static constexpr uint8_t kNewline = 32; // [\r\n]

 private:
  // Two-stage table: block_[cp >> 8] is the first of 256 entries of classes_.
  std::vector<uint32_t> block_;
  std::vector<uint8_t> classes_;
};

}  // namespace sambay
