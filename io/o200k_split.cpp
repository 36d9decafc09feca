#include "io/o200k_split.h"

#include "core/check.h"
#include "io/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <map>
#include <string>

namespace sambay {

// The pattern's character classes, spelled once for the pattern and for the tables.
#define SAMBAY_UPPER "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define SAMBAY_LOWER "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define SAMBAY_WS "\\t-\\r\\x{85}\\p{Z}"
#define SAMBAY_CONTRACTION "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"

const char* const kO200kPattern =
    "[^\\r\\n\\p{L}\\p{N}]?" SAMBAY_UPPER "*" SAMBAY_LOWER "+" SAMBAY_CONTRACTION
    "|[^\\r\\n\\p{L}\\p{N}]?" SAMBAY_UPPER "+" SAMBAY_LOWER "*" SAMBAY_CONTRACTION
    "|\\p{N}{1,3}"
    "| ?[^" SAMBAY_WS "\\p{L}\\p{N}]+[\\r\\n/]*"
    "|[" SAMBAY_WS "]*[\\r\\n]+"
    "|[" SAMBAY_WS "]+(?![^" SAMBAY_WS "])"
    "|[" SAMBAY_WS "]+";

namespace {

constexpr uint32_t kCodePoints = 0x110000;

// Appends the UTF-8 of cp at out, returning the end.
char* put_utf8(uint32_t cp, char* out) {
  if (cp < 0x80) {
    *out++ = static_cast<char>(cp);
  } else if (cp < 0x800) {
    *out++ = static_cast<char>(0xC0 | cp >> 6);
    *out++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *out++ = static_cast<char>(0xE0 | cp >> 12);
    *out++ = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    *out++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *out++ = static_cast<char>(0xF0 | cp >> 18);
    *out++ = static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    *out++ = static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    *out++ = static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// The UTF-8 of the code points, back to back.
std::string utf8_of(const std::vector<uint32_t>& code_points) {
  std::string out(4 * code_points.size(), '\0');
  char* end = out.data();
  for (uint32_t cp : code_points) end = put_utf8(cp, end);
  out.resize(static_cast<size_t>(end - out.data()));
  return out;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Calls on_char(cp) for every code point of `text` (valid UTF-8) that `run_pattern` (a class
// followed by +) matches.
template <class OnChar>
void for_each_match(const std::string& text, const char* run_pattern, OnChar&& on_char) {
  int code = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(run_pattern), PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &code, &offset, nullptr);
  SAMBAY_CHECK(re, "PCRE2 cannot compile '{}': {}", run_pattern, pcre2_message(code));
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // without JIT: slower, the same classes
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(re, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const uint8_t* end = bytes + text.size();
  for (size_t at = 0; at < text.size();) {
    const int rc = pcre2_match(re, subject, text.size(), at, PCRE2_NO_UTF_CHECK, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    SAMBAY_CHECK(rc > 0, "PCRE2 failed on '{}': {}", run_pattern, pcre2_message(rc));
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match);
    for (size_t i = span[0]; i < span[1];) {
      const Utf8Char c = decode_utf8(bytes + i, end);
      on_char(c.code_point);
      i += c.length;
    }
    at = span[1];
  }
  pcre2_match_data_free(match);
  pcre2_code_free(re);
}

// A character as the matcher sees it: its classes and byte length (0: not valid UTF-8).
struct Char {
  uint8_t classes;
  uint8_t len;
};

constexpr uint8_t kLetterLike = O200kSplitter::kUpper | O200kSplitter::kLower;
// [^\r\n\p{L}\p{N}]: the optional character before a word
constexpr uint8_t kNotPrefix =
    O200kSplitter::kNewline | O200kSplitter::kLetter | O200kSplitter::kNumber;
// [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls, unassigned
constexpr uint8_t kNotOther =
    O200kSplitter::kSpace | O200kSplitter::kLetter | O200kSplitter::kNumber;

// One match: the text's bounds, the tables, and whether an invalid byte was met.
struct Scan {
  const uint8_t* end;
  const uint32_t* block;
  const uint8_t* classes;
  bool invalid = false;

  Char at(const uint8_t* p) {
    if (*p < 0x80) return {classes[*p], 1};  // block 0 starts the table
    const Utf8Char c = decode_utf8(p, end);
    if (c.length == 0) {
      invalid = true;
      return {0, 0};
    }
    return {classes[block[c.code_point >> 8] + (c.code_point & 0xFF)],
            static_cast<uint8_t>(c.length)};
  }

  // The end of the run of characters with any of `bits` from p (p itself if none).
  const uint8_t* run(const uint8_t* p, uint8_t bits) {
    while (p < end) {
      const Char c = at(p);
      if (!(c.classes & bits)) break;  // also an invalid character (classes 0)
      p += c.len;
    }
    return p;
  }

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)? at p. Case-insensitive: each letter's two ASCII cases, and
  // U+017F (long s, UTF-8 C5 BF), which folds to s; test_o200k_split checks that PCRE2 knows
  // no others.
  const uint8_t* contraction(const uint8_t* p) const {
    if (end - p < 2 || p[0] != '\'') return p;
    const auto is = [&](ptrdiff_t i, char lower) {
      return p + i < end && (p[i] | 0x20) == lower;  // only 'X' and 'x' give 'x'
    };
    switch (p[1] | 0x20) {
      case 's':
      case 't':
      case 'm':
      case 'd':
        return p + 2;
      case 'r':
      case 'v':
        return is(2, 'e') ? p + 3 : p;
      case 'l':
        return is(2, 'l') ? p + 3 : p;
      default:
        return p[1] == 0xC5 && p + 2 < end && p[2] == 0xBF ? p + 3 : p;
    }
  }

  // Alternatives 1 and 2 where they meet only ASCII (most words): an optional ASCII prefix
  // character, then ASCII letters: upper* lower* (in ASCII no letter is both, so alternative 1's
  // backtracking has nothing to give back), then the contraction. Null where a character it
  // must classify is not ASCII (it may be a letter or a mark) or the text there is no word.
  const uint8_t* ascii_word(const uint8_t* p) const {
    constexpr uint8_t kNotPrefix =
        O200kSplitter::kNewline | O200kSplitter::kLetter | O200kSplitter::kNumber;
    const auto upper = [](uint8_t b) { return b >= 'A' && b <= 'Z'; };
    const auto lower = [](uint8_t b) { return b >= 'a' && b <= 'z'; };
    const uint8_t* q = p;
    if (*q >= 0x80) return nullptr;
    if (!(classes[*q] & kNotPrefix)) ++q;  // a prefix only if a word follows
    if (q == end || !(upper(*q) || lower(*q))) return nullptr;
    while (q < end && upper(*q)) ++q;
    while (q < end && lower(*q)) ++q;
    if (q < end && *q >= 0x80) return nullptr;
    return contraction(q);
  }

  // Alternative 1 from j (after the optional prefix): upper* lower+ contraction?. PCRE2 tries
  // the longest upper run first, then shorter ones: the lower run starts after the whole upper
  // run if a lower character follows it, else at the last character of the upper run that is
  // also lower (Lm, Lo, M), and the lower run is then that one character.
  const uint8_t* upper_lower(const uint8_t* j) {
    const uint8_t* last_both_end = nullptr;  // the end of that last upper-and-lower character
    const uint8_t* p = j;
    Char c{0, 0};
    while (p < end) {
      c = at(p);
      if (!(c.classes & O200kSplitter::kUpper)) break;
      p += c.len;
      if (c.classes & O200kSplitter::kLower) last_both_end = p;
    }
    if (invalid) return nullptr;
    if (p < end && (c.classes & O200kSplitter::kLower)) {
      const uint8_t* e = run(p + c.len, O200kSplitter::kLower);
      return invalid ? nullptr : contraction(e);
    }
    return last_both_end ? contraction(last_both_end) : nullptr;
  }

  // Alternative 2 from j: upper+ lower* contraction?.
  const uint8_t* upper_then_lower(const uint8_t* j) {
    const uint8_t* p = run(j, O200kSplitter::kUpper);
    if (invalid || p == j) return nullptr;
    const uint8_t* e = run(p, O200kSplitter::kLower);
    return invalid ? nullptr : contraction(e);
  }
};

}  // namespace

O200kSplitter::O200kSplitter() {
  std::vector<uint32_t> every;
  every.reserve(kCodePoints);
  for (uint32_t cp = 0; cp < kCodePoints; ++cp)
    if (cp < 0xD800 || cp >= 0xE000) every.push_back(cp);
  // One pass over all of Unicode finds the characters in any class (an eighth of them); the
  // five classes are then asked about those only.
  std::vector<uint32_t> any;
  for_each_match(utf8_of(every), "[\\p{L}\\p{M}\\p{N}" SAMBAY_WS "]+",
                 [&](uint32_t cp) { any.push_back(cp); });
  const std::string candidates = utf8_of(any);
  std::vector<uint8_t> all(kCodePoints, 0);
  const std::pair<const char*, uint8_t> classes[] = {{SAMBAY_UPPER "+", kUpper},
                                                     {SAMBAY_LOWER "+", kLower},
                                                     {"\\p{L}+", kLetter},
                                                     {"\\p{N}+", kNumber},
                                                     {"[" SAMBAY_WS "]+", kSpace}};
  for (const auto& [pattern, bit] : classes)
    for_each_match(candidates, pattern, [&, bit = bit](uint32_t cp) { all[cp] |= bit; });
  all['\r'] |= kNewline;
  all['\n'] |= kNewline;
  // Blocks of 256 code points, each distinct one stored once (block 0 first: ASCII looks up
  // classes_ directly).
  std::map<std::array<uint8_t, 256>, uint32_t> seen;
  block_.resize(kCodePoints >> 8);
  for (uint32_t b = 0; b < block_.size(); ++b) {
    std::array<uint8_t, 256> entries;
    std::copy(all.begin() + (size_t{b} << 8), all.begin() + (size_t{b + 1} << 8), entries.begin());
    auto [it, added] = seen.emplace(entries, static_cast<uint32_t>(classes_.size()));
    if (added) classes_.insert(classes_.end(), entries.begin(), entries.end());
    block_[b] = it->second;
  }
}

uint8_t O200kSplitter::classes_of(uint32_t cp) const {
  return cp < kCodePoints ? classes_[block_[cp >> 8] + (cp & 0xFF)] : 0;
}

size_t O200kSplitter::match(std::string_view text, size_t at) const {
  const auto* begin = reinterpret_cast<const uint8_t*>(text.data());
  Scan s{begin + text.size(), block_.data(), classes_.data()};
  const uint8_t* p = begin + at;
  if (const uint8_t* e = s.ascii_word(p)) return static_cast<size_t>(e - begin);
  const Char c0 = s.at(p);
  if (s.invalid) return 0;
  auto done = [&](const uint8_t* e) -> size_t { return s.invalid ? 0 : static_cast<size_t>(e - begin); };

  // 1 and 2: [^\r\n\p{L}\p{N}]? then the words; the prefix is tried taken, then not. Each try
  // needs a letter or mark where the words start, so the others are skipped.
  const uint8_t* after = p + c0.len;
  bool from_after = false;
  if (!(c0.classes & kNotPrefix) && after < s.end) {
    const Char c1 = s.at(after);
    if (s.invalid) return 0;
    from_after = c1.classes & kLetterLike;
  }
  const bool from_here = c0.classes & kLetterLike;
  if (from_after || from_here) {
    if (from_after)
      if (const uint8_t* e = s.upper_lower(after); e || s.invalid) return done(e);
    if (from_here)
      if (const uint8_t* e = s.upper_lower(p); e || s.invalid) return done(e);
    if (from_after)
      if (const uint8_t* e = s.upper_then_lower(after); e || s.invalid) return done(e);
    if (from_here)
      if (const uint8_t* e = s.upper_then_lower(p); e || s.invalid) return done(e);
  }
  // 3: \p{N}{1,3}
  if (c0.classes & kNumber) {
    const uint8_t* e = p + c0.len;
    for (int i = 1; i < 3 && e < s.end; ++i) {
      const Char c = s.at(e);
      if (!(c.classes & kNumber)) break;
      e += c.len;
    }
    return done(e);
  }
  // 4: " ?[^\s\p{L}\p{N}]+[\r\n/]*"
  const uint8_t* other = nullptr;
  if (!(c0.classes & kNotOther)) {
    other = p;
  } else if (*p == ' ' && p + 1 < s.end) {
    const Char c1 = s.at(p + 1);
    if (s.invalid) return 0;
    if (!(c1.classes & kNotOther)) other = p + 1;
  }
  if (other) {
    const uint8_t* e = other;
    while (e < s.end) {
      const Char c = s.at(e);
      if (s.invalid) return 0;
      if (c.classes & kNotOther) break;
      e += c.len;
    }
    while (e < s.end && (*e == '\r' || *e == '\n' || *e == '/')) ++e;
    return done(e);
  }
  // 5, 6, 7 on the run of whitespace from p.
  if (c0.classes & kSpace) {
    const uint8_t* last_newline_end = nullptr;
    const uint8_t* last_start = p;
    const uint8_t* e = p;
    while (e < s.end) {
      const Char c = s.at(e);
      if (s.invalid) return 0;
      if (!(c.classes & kSpace)) break;
      last_start = e;
      e += c.len;
      if (c.classes & kNewline) last_newline_end = e;
    }
    // 5: \s*[\r\n]+ ends after the run's last newline (PCRE2 gives back from the end).
    if (last_newline_end) return done(last_newline_end);
    // 6: \s+(?!\S): the whole run at the end of the text, else all but its last character.
    if (e == s.end) return done(e);
    if (last_start != p) return done(last_start);
    // 7: \s+
    return done(e);
  }
  return 0;  // unreachable for valid UTF-8: every character is in some alternative's class
}

}  // namespace sambay
