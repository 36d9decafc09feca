// The hand-written o200k pre-tokeniser against PCRE2 running the pattern it replaces: the
// character classes, the case folding of contractions, every position of random strings (valid
// and invalid UTF-8), and whole texts through the encoder. The tiktoken corpus is compared in
// test_bpe_tokenizer (O200kAgainstRegex).
#include "io/bpe_tokenizer.h"
#include "io/o200k_split.h"
#include "tests/io_test_util.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace sambay {
namespace {

using testing::ScratchDir;

std::string utf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12), out += char(0x80 | (cp >> 6 & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18), out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F)), out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

// PCRE2 with the tokenizer's flags, one match at a time.
class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    int code = 0;
    PCRE2_SIZE offset = 0;
    re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset, nullptr);
    EXPECT_NE(re_, nullptr) << pattern;
    pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);
    match_ = pcre2_match_data_create_from_pattern(re_, nullptr);
  }
  ~Regex() {
    pcre2_match_data_free(match_);
    pcre2_code_free(re_);
  }
  // The first match at or after `at`: (start, end), or (npos, npos).
  std::pair<size_t, size_t> find(std::string_view text, size_t at) {
    const int rc = pcre2_match(re_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), at, 0,
                               match_, nullptr);
    if (rc < 0) return {std::string::npos, std::string::npos};
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match_);
    return {span[0], span[1]};
  }

 private:
  pcre2_code* re_ = nullptr;
  pcre2_match_data* match_ = nullptr;
};

const O200kSplitter& splitter() {
  static const O200kSplitter s;
  return s;
}

TEST(O200kSplit, ClassesAreThePatternsClasses) {
  using S = O200kSplitter;
  const O200kSplitter& s = splitter();
  const std::vector<std::pair<uint32_t, uint8_t>> cases = {
      {'a', S::kLower | S::kLetter},
      {'Z', S::kUpper | S::kLetter},
      {0x01C5, S::kUpper | S::kLetter},              // Lt: Dž
      {0x02B0, S::kUpper | S::kLower | S::kLetter},  // Lm: modifier h
      {0x4E2D, S::kUpper | S::kLower | S::kLetter},  // Lo: 中
      {0x0301, S::kUpper | S::kLower},               // Mn: combining acute, no letter
      {0x20DD, S::kUpper | S::kLower},               // Me: enclosing circle
      {'7', S::kNumber},
      {0x0663, S::kNumber},    // Arabic-Indic three
      {0x216B, S::kNumber},    // Nl: Roman twelve
      {0x00BD, S::kNumber},    // No: one half
      {' ', S::kSpace},
      {'\t', S::kSpace},
      {'\n', S::kSpace | S::kNewline},
      {'\r', S::kSpace | S::kNewline},
      {0x0085, S::kSpace},     // NEL
      {0x00A0, S::kSpace},     // no-break space (Zs)
      {0x2028, S::kSpace},     // line separator (Zl)
      {0x3000, S::kSpace},     // ideographic space
      {0x180E, 0},             // Mongolian vowel separator: Cf, not White_Space
      {0x200D, 0},             // zero-width joiner
      {'\'', 0},
      {'/', 0},
      {0x1F600, 0},            // emoji (So)
      {0x0378, 0},             // unassigned
      {0xE0041, 0},            // tag letter A (Cf)
      {0xE0100, S::kUpper | S::kLower},  // variation selector 17 (Mn)
      {0x10FFFF, 0},
  };
  for (const auto& [cp, want] : cases)
    EXPECT_EQ(int(s.classes_of(cp)), int(want)) << fmt::format("U+{:04X}", cp);
}

// The contraction letters fold as the matcher assumes: each its two ASCII cases, and s also
// U+017F (long s). Every code point is asked.
TEST(O200kSplit, ContractionLettersFoldOnlyAsAssumed) {
  std::string universe;
  for (uint32_t cp = 0; cp < 0x110000; ++cp)
    if (cp < 0xD800 || cp >= 0xE000) universe += utf8(cp);
  for (char letter : std::string("strevmld")) {
    Regex re(fmt::format("(?i:{})", letter));
    std::vector<std::string> found;
    for (size_t at = 0;;) {
      const auto [b, e] = re.find(universe, at);
      if (b == std::string::npos) break;
      found.push_back(universe.substr(b, e - b));
      at = e;
    }
    std::vector<std::string> want = {std::string(1, char(letter - 32)), std::string(1, letter)};
    if (letter == 's') want.push_back(utf8(0x017F));
    EXPECT_EQ(found, want) << letter;
  }
}

// Characters from every class the pattern tells apart, runs of them, and broken UTF-8.
std::vector<std::string> alphabet() {
  std::vector<std::string> a;
  for (const char* ascii : {"a", "b", "s", "t", "r", "e", "v", "m", "l", "d", "x", "S", "T",
                            "R", "E", "V", "M", "L", "D", "X", "'", "'", "'", "0", "1", "9",
                            " ", " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\v", "\f", "/",
                            "!", ".", ",", "-", "(", "\"", "_", "@", "#", "\x01", "\x7f",
                            "\0"})
    a.push_back(std::string(ascii, ascii[0] ? std::strlen(ascii) : 1));
  for (uint32_t cp : {0x017F, 0x212A, 0x01C5, 0x02B0, 0x3005, 0x4E2D, 0x3042, 0xAC00, 0x0E20,
                      0x0410, 0x0430, 0x00C9, 0x00E9, 0x0301, 0x0903, 0x20DD, 0x0E31, 0xE0100,
                      0x0663, 0x216B, 0x00BD, 0x00B2, 0x1D7CE, 0x0085, 0x00A0, 0x2028, 0x2029,
                      0x3000, 0x180E, 0x200B, 0x200D, 0xFE0F, 0x1F600, 0x1F3FD, 0x1F1EB,
                      0x00A9, 0x2014, 0x201C, 0x0378, 0xE000, 0xE0041, 0x10FFFF, 0xFFFD})
    a.push_back(utf8(cp));
  for (const char* broken : {"\x80", "\xbf", "\xff", "\xc0\x80", "\xc3", "\xe2\x82",
                             "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf0\x9f\x98"})
    a.push_back(broken);
  return a;
}

std::string random_text(std::mt19937_64& rng, const std::vector<std::string>& a, bool valid) {
  const size_t broken = 9;  // the last entries of alphabet()
  const size_t n = std::uniform_int_distribution<size_t>(1, 40)(rng);
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    std::string piece = a[rng() % (valid ? a.size() - broken : a.size())];
    const size_t repeat = rng() % 8 == 0 ? 1 + rng() % 5 : 1;
    for (size_t r = 0; r < repeat; ++r) text += piece;
  }
  return text;
}

bool is_char_start(std::string_view text, size_t at) {
  return (static_cast<unsigned char>(text[at]) & 0xC0) != 0x80;
}

// At every byte of every string: the matcher either defers (0) or ends where PCRE2's match from
// there ends, and PCRE2's match starts there. In valid UTF-8 it never defers at a character.
TEST(O200kSplit, EveryPositionOfRandomStringsMatchesAsPcre2) {
  Regex re(kO200kPattern);
  const std::vector<std::string> a = alphabet();
  std::mt19937_64 rng(7);
  int64_t positions = 0, decided = 0, decided_in_broken = 0;
  for (int i = 0; i < 100000; ++i) {
    const bool valid = i % 2 == 0;
    const std::string text = random_text(rng, a, valid);
    for (size_t at = 0; at < text.size(); ++at) {
      const size_t end = splitter().match(text, at);
      positions += 1;
      if (end == 0) {
        ASSERT_FALSE(valid && is_char_start(text, at))
            << "deferred on valid UTF-8 at byte " << at << " of '" << text << "'";
        continue;
      }
      decided += 1;
      decided_in_broken += !valid;
      const auto [b, e] = re.find(text, at);
      ASSERT_EQ(b, at) << "byte " << at << " of '" << text << "'";
      ASSERT_EQ(e, end) << "byte " << at << " of '" << text << "'";
    }
  }
  std::printf("%lld positions, %lld decided by the matcher (%lld in broken UTF-8)\n",
              static_cast<long long>(positions), static_cast<long long>(decided),
              static_cast<long long>(decided_in_broken));
  EXPECT_GT(decided_in_broken, 0);  // it works on around broken bytes too
}

// A small vocabulary (the bytes and a few merges): the encoder's pieces with the matcher
// (pattern o200k's exactly) and without it (the same regex in a group, which PCRE2 runs).
struct TwoEncoders {
  ScratchDir dir;
  std::shared_ptr<const BpeTokenizer> fast, regex;
  TwoEncoders() {
    std::string vocab;
    static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int b = 0; b < 256; ++b) {
      const uint32_t v = uint32_t(b) << 16;
      vocab += fmt::format("{}{}== {}\n", digits[v >> 18 & 63], digits[v >> 12 & 63], b);
    }
    std::ofstream(dir.file("v.tiktoken")) << vocab;
    BpeTokenizerOptions o;
    o.specials = {{"<|endoftext|>", 256}};
    o.pattern = kO200kPattern;
    fast = BpeTokenizer::load(dir.file("v.tiktoken"), o);
    o.pattern = "(?:" + std::string(kO200kPattern) + ")";
    regex = BpeTokenizer::load(dir.file("v.tiktoken"), o);
  }
};

void expect_same_pieces(const TwoEncoders& t, const std::vector<std::string>& texts) {
  BpeEncoder fast(t.fast), regex(t.regex);
  for (const std::string& text : texts) {
    std::vector<std::string_view> a, b;
    fast.split(text, a);
    regex.split(text, b);
    ASSERT_EQ(a, b) << "'" << text.substr(0, 200) << "'";
  }
  EXPECT_EQ(fast.unmatched_bytes(), regex.unmatched_bytes());
}

TEST(O200kSplit, EncoderPiecesEqualTheRegexsOnTexts) {
  TwoEncoders t;
  EXPECT_EQ(t.fast->regex_engine().rfind("o200k matcher", 0), 0u) << t.fast->regex_engine();
  EXPECT_EQ(t.regex->regex_engine().rfind("PCRE2", 0), 0u) << t.regex->regex_engine();
  std::vector<std::string> texts = {
      "Hello, world! It's 2024; we'll see. DON'T SHOUT. I'LL WAIT. he'\xc5\xbf 'S",
      "中文文本测试：今天天气很好。 日本語のテキスト 한국어 문장입니다.",
      "e\xcc\x81te\xcc\x81 \xcc\x81\xcc\x81x Tiếng Việt हिन्दी العَرَبِيَّة",
      "   leading\n\n\n\t\t tabs   \n   \r\n\r\n  trailing   ",
      "x\xc2\xa0 \xe3\x80\x80y \xc2\x85\n\xe1\xa0\x8ez",
      "1234567 \xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4 \xe2\x85\xab 3.14",
      "!!!??? ... /// \n/ //\n\r/x <|endoftext|>",
      "ab\xff\xfe cd\xc3(\x80 \xe2\x82 end\xf0",
      std::string(3000, ' ') + "x" + std::string(500, '\n') + std::string(700, 'a'),
  };
  for (const auto& entry : std::filesystem::directory_iterator("/usr/share/common-licenses"))
    if (entry.is_regular_file()) texts.push_back(testing::read_text(entry.path().string()));
  const std::vector<std::string> a = alphabet();
  std::mt19937_64 rng(11);
  for (int i = 0; i < 20000; ++i) texts.push_back(random_text(rng, a, i % 4 != 0));
  expect_same_pieces(t, texts);
}

}  // namespace
}  // namespace sambay
