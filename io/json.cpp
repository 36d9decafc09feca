#include "io/json.h"

#include "core/check.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>

namespace sambay {

namespace {

constexpr int kMaxDepth = 64;  // deeper documents are refused rather than overflowing the stack

struct Parser {
  std::string_view s;
  const std::string& where;
  size_t pos = 0;

  [[noreturn]] void error(const std::string& what) {
    fail("{}: invalid JSON at byte {}: {}", where, pos, what);
  }

  void skip_space() {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t'))
      ++pos;
  }

  bool take(char c) {
    skip_space();
    if (pos < s.size() && s[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!take(c)) error(fmt::format("expected '{}'", c));
  }

  void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (pos + 4 > s.size()) error("truncated \\u escape");
    uint32_t v = 0;
    auto [end, ec] = std::from_chars(s.data() + pos, s.data() + pos + 4, v, 16);
    if (ec != std::errc() || end != s.data() + pos + 4) error("bad \\u escape");
    pos += 4;
    return v;
  }

  std::string string() {
    skip_space();
    if (pos >= s.size() || s[pos] != '"') error("expected a string");
    ++pos;
    std::string out;
    while (true) {
      if (pos >= s.size()) error("unterminated string");
      const char c = s[pos++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos >= s.size()) error("unterminated escape");
      const char e = s[pos++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            if (pos + 2 > s.size() || s[pos] != '\\' || s[pos + 1] != 'u') error("lone surrogate");
            pos += 2;
            const uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) error("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: error(fmt::format("unknown escape '\\{}'", e));
      }
    }
  }

  Json number() {
    const size_t start = pos;
    if (pos < s.size() && s[pos] == '-') ++pos;
    auto digits = [&] {
      const size_t d0 = pos;
      while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos;
      if (pos == d0) error("expected a digit");
    };
    digits();
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      digits();
    }
    if (pos < s.size() && (s[pos] == 'e' || s[pos] == 'E')) {
      ++pos;
      if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) ++pos;
      digits();
    }
    Json j;
    j.kind = Json::Kind::number;
    j.text = std::string(s.substr(start, pos - start));
    return j;
  }

  bool word(std::string_view w) {
    if (s.substr(pos, w.size()) != w) return false;
    pos += w.size();
    return true;
  }

  Json value(int depth) {
    if (depth > kMaxDepth) error("nested too deeply");
    skip_space();
    if (pos >= s.size()) error("unexpected end");
    Json j;
    const char c = s[pos];
    if (c == '{') {
      ++pos;
      j.kind = Json::Kind::object;
      if (take('}')) return j;
      do {
        std::string key = string();
        expect(':');
        j.members.emplace_back(std::move(key), value(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++pos;
      j.kind = Json::Kind::array;
      if (take(']')) return j;
      do j.items.push_back(value(depth + 1));
      while (take(','));
      expect(']');
    } else if (c == '"') {
      j.kind = Json::Kind::string;
      j.text = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      j = number();
    } else if (word("true")) {
      j.kind = Json::Kind::boolean;
      j.boolean = true;
    } else if (word("false")) {
      j.kind = Json::Kind::boolean;
    } else if (word("null")) {
      j.kind = Json::Kind::null;
    } else {
      error(fmt::format("unexpected character '{}'", c));
    }
    return j;
  }
};

}  // namespace

const Json* Json::find(const std::string& key) const {
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

int64_t Json::as_int(const std::string& what) const {
  int64_t v = 0;
  if (kind == Kind::number) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc() && end == text.data() + text.size()) return v;
  }
  fail("{}: expected an integer, got {}", what, kind == Kind::number ? text : "a non-number");
}

double Json::as_number(const std::string& what) const {
  if (kind != Kind::number) fail("{}: expected a number", what);
  return std::strtod(text.c_str(), nullptr);
}

const std::string& Json::as_string(const std::string& what) const {
  if (kind != Kind::string) fail("{}: expected a string", what);
  return text;
}

Json parse_json(std::string_view text, const std::string& where) {
  Parser p{text, where};
  Json j = p.value(0);
  p.skip_space();
  if (p.pos != text.size()) p.error("trailing characters after the document");
  return j;
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
        else
          out += c;
    }
  }
  return out + "\"";
}

}  // namespace sambay
