#include "io/jsonl_field.h"

#include "io/utf8.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace sambay {

namespace {

constexpr int kMaxDepth = 64;

// Eight bytes at a time: does any need a look (a quote, a backslash, a control character or a
// byte of a multi-byte character)? The borrow tricks may also flag bytes after a true hit,
// never miss one.
inline bool word_needs_look(uint64_t w) {
  constexpr uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
  const auto has_zero = [&](uint64_t v) { return (v - ones) & ~v & highs; };
  const uint64_t below_space = (w - 0x20 * ones) & ~w & highs;
  return ((w & highs) | has_zero(w ^ (0x22 * ones)) | has_zero(w ^ (0x5C * ones)) | below_space) != 0;
}

int hex_value(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A validating reader over one line; every method returns false at the first thing it cannot
// vouch for.
struct Reader {
  const uint8_t* p;
  const uint8_t* end;

  void skip_space() {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
  }
  bool eat(uint8_t c) {
    if (p == end || *p != c) return false;
    ++p;
    return true;
  }

  // \uXXXX's four digits at p.
  bool hex4(uint32_t& v) {
    if (end - p < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const int d = hex_value(p[i]);
      if (d < 0) return false;
      v = v << 4 | static_cast<uint32_t>(d);
    }
    p += 4;
    return true;
  }

  // A string at p (the opening quote). `raw`: its bytes between the quotes. `decoded`: null to
  // validate only; else receives the string's value when it has escapes (has_escapes true).
  bool string(std::string_view& raw, std::string* decoded, bool& has_escapes) {
    if (!eat('"')) return false;
    const uint8_t* start = p;
    const uint8_t* copied = p;  // decoded holds the value up to here
    has_escapes = false;
    for (;;) {
      while (end - p >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        if (word_needs_look(w)) break;
        p += 8;
      }
      if (p == end) return false;
      const uint8_t c = *p;
      if (c == '"') break;
      if (c < 0x20) return false;
      if (c >= 0x80) {
        const Utf8Char u = decode_utf8(p, end);
        if (u.length == 0) return false;
        p += u.length;
        continue;
      }
      if (c != '\\') {
        ++p;
        continue;
      }
      if (decoded) {
        if (!has_escapes) decoded->clear();
        decoded->append(reinterpret_cast<const char*>(copied), static_cast<size_t>(p - copied));
      }
      has_escapes = true;
      if (end - p < 2) return false;
      const uint8_t e = p[1];
      p += 2;
      char simple = 0;
      switch (e) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xDC00 && cp < 0xE000) return false;  // a low surrogate alone
          if (cp >= 0xD800 && cp < 0xDC00) {              // needs its low half
            uint32_t low = 0;
            if (!eat('\\') || !eat('u') || !hex4(low) || low < 0xDC00 || low >= 0xE000)
              return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          if (decoded) append_utf8(cp, *decoded);
          break;
        }
        default:
          return false;
      }
      if (simple && decoded) *decoded += simple;
      copied = p;
    }
    raw = std::string_view(reinterpret_cast<const char*>(start), static_cast<size_t>(p - start));
    if (decoded && has_escapes)
      decoded->append(reinterpret_cast<const char*>(copied), static_cast<size_t>(p - copied));
    ++p;  // the closing quote
    return true;
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, and finite as a double (nlohmann-json refuses
  // a number that overflows).
  bool number() {
    const uint8_t* start = p;
    const auto digits = [&] {
      const uint8_t* from = p;
      while (p < end && *p >= '0' && *p <= '9') ++p;
      return p > from;
    };
    eat('-');
    if (eat('0')) {
    } else if (!digits()) {
      return false;
    }
    if (eat('.') && !digits()) return false;
    bool exponent = false;
    if (p < end && (*p == 'e' || *p == 'E')) {
      exponent = true;
      ++p;
      if (p < end && (*p == '+' || *p == '-')) ++p;
      if (!digits()) return false;
    }
    if (exponent || p - start > 300) {
      double v = 0;
      const auto [ptr, ec] = std::from_chars(reinterpret_cast<const char*>(start),
                                             reinterpret_cast<const char*>(p), v);
      if (ec != std::errc() || !std::isfinite(v)) return false;
    }
    return true;
  }

  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (static_cast<size_t>(end - p) < n || std::memcmp(p, word, n) != 0) return false;
    p += n;
    return true;
  }

  // Any value, validated and skipped.
  bool value(int depth) {
    if (p == end) return false;
    switch (*p) {
      case '"': {
        std::string_view raw;
        bool escapes = false;
        return string(raw, nullptr, escapes);
      }
      case '{':
      case '[': {
        if (depth >= kMaxDepth) return false;
        const bool object = *p == '{';
        const uint8_t close = object ? '}' : ']';
        ++p;
        skip_space();
        if (eat(close)) return true;
        for (;;) {
          if (object) {
            std::string_view key;
            bool escapes = false;
            if (!string(key, nullptr, escapes)) return false;
            skip_space();
            if (!eat(':')) return false;
            skip_space();
          }
          if (!value(depth + 1)) return false;
          skip_space();
          if (eat(close)) return true;
          if (!eat(',')) return false;
          skip_space();
        }
      }
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
};

}  // namespace

std::optional<std::string_view> jsonl_string_field(std::string_view line, std::string_view key,
                                                   std::string& scratch) {
  const auto* begin = reinterpret_cast<const uint8_t*>(line.data());
  Reader r{begin, begin + line.size()};
  std::optional<std::string_view> found;
  r.skip_space();
  if (!r.eat('{')) return std::nullopt;
  r.skip_space();
  if (r.eat('}')) return std::nullopt;  // no members: no key
  for (;;) {
    std::string_view name;
    bool escapes = false;
    if (!r.string(name, nullptr, escapes) || escapes) return std::nullopt;
    r.skip_space();
    if (!r.eat(':')) return std::nullopt;
    r.skip_space();
    if (name == key) {
      if (found || r.p == r.end || *r.p != '"') return std::nullopt;  // repeated, or no string
      std::string_view raw;
      if (!r.string(raw, &scratch, escapes)) return std::nullopt;
      found = escapes ? std::string_view(scratch) : raw;
    } else if (!r.value(1)) {
      return std::nullopt;
    }
    r.skip_space();
    if (r.eat('}')) break;
    if (!r.eat(',')) return std::nullopt;
    r.skip_space();
  }
  r.skip_space();
  if (r.p != r.end) return std::nullopt;
  return found;
}

}  // namespace sambay
