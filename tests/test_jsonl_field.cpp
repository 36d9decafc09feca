// The JSONL field reader against nlohmann-json: where it answers, nlohmann-json parses the line
// to an object whose member has that value; it answers for the lines corpora are made of; and on
// lines with errors, escaped or repeated keys it leaves the decision to nlohmann-json.
#include "io/jsonl_field.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <random>

namespace sambay {
namespace {

// nlohmann-json's answer: the string value of `key`, or nullopt for any error, a non-object, a
// missing key or a non-string.
std::optional<std::string> reference(std::string_view line, const std::string& key) {
  try {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.is_object()) return std::nullopt;
    const auto it = j.find(key);
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

// The reader never contradicts nlohmann-json; returns whether it answered.
bool agrees(std::string_view line, const std::string& key = "text") {
  std::string scratch;
  const std::optional<std::string_view> fast = jsonl_string_field(line, key, scratch);
  if (!fast) return false;
  const std::optional<std::string> want = reference(line, key);
  EXPECT_TRUE(want.has_value()) << "answered for a line nlohmann-json refuses: " << line;
  if (want) {
    EXPECT_EQ(*fast, *want) << line;
  }
  return true;
}

TEST(JsonlField, AnswersForOrdinaryLines) {
  const std::vector<std::string> lines = {
      R"({"text": "hello"})",
      R"({"id": 7, "text": "a\nb\t\"q\" \\ \/ \b\f\r", "meta": {"n": [1, 2.5, -3e2, true, null]}})",
      R"(  {"text":"\u00e9\ud83d\ude00\u0000x"}  )",
      "{\"text\": \"caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\", \"score\": 0.125}\r",
      R"({"meta": {"a": {"b": [[], {}, ""]}}, "text": ""})",
      R"({"url": "https://x.org/a?b=1", "text": "body", "tags": ["x", "y"], "n": -0})",
  };
  for (const std::string& line : lines) EXPECT_TRUE(agrees(line)) << line;
  std::string scratch;
  EXPECT_EQ(*jsonl_string_field(R"({"text": "plain"})", "text", scratch), "plain");
  EXPECT_EQ(*jsonl_string_field(R"({"body": "x\ny"})", "body", scratch), "x\ny");
}

TEST(JsonlField, LeavesErrorsAndUnusualLinesToNlohmann) {
  const std::vector<std::string> lines = {
      R"({"text": "no end})",
      R"({"text": "a" "b"})",
      R"({"text": "ok"} x)",
      R"({"text": 5})",
      R"({"txt": "x"})",
      R"([1, 2])",
      R"({})",
      R"({"text": "a", "text": "b"})",     // repeated: nlohmann-json keeps the last
      R"({"te\u0078t": "escaped key"})",
      R"({"text": "bad \x escape"})",
      R"({"text": "\ud800 lone high"})",
      R"({"text": "\udc00 lone low"})",
      R"({"text": "x", "n": 1e999})",      // overflows
      R"({"text": "x", "n": 01})",
      R"({"text": "x", "n": 1.})",
      R"({"text": "x", "n": -})",
      R"({"text": "x", "b": tru})",
      R"({"text": "x",})",
      "{\"text\": \"tab\there\"}",
      "{\"text\": \"bad \xff byte\"}",
      "{\"text\": \"overlong \xc0\x80\"}",
      "{\"text\": \"surrogate \xed\xa0\x80\"}",
      "\xef\xbb\xbf{\"text\": \"byte-order mark\"}",
      std::string(100, '[') + std::string(100, ']'),
      "{\"text\": \"x\", \"deep\": " + std::string(70, '[') + std::string(70, ']') + "}",
  };
  for (const std::string& line : lines) EXPECT_FALSE(agrees(line)) << line;
}

// Random lines from JSON's grammar, some bytes then changed: never a contradiction.
TEST(JsonlField, RandomLinesNeverContradictNlohmann) {
  std::mt19937_64 rng(3);
  const std::vector<std::string> atoms = {
      "\"text\"", "\"t\"", "\"a b\"", "\"\\n\"", "\"\\u00e9\"", "\"\\ud83d\\ude00\"", "\"\xc3\xa9\"",
      "0", "-1", "2.5", "1e3", "-0.0e-2", "true", "false", "null", "\"\"", "\"x\\\"y\""};
  const std::vector<size_t> string_atoms = {0, 1, 2, 3, 4, 5, 6, 15, 16};
  std::function<std::string(int)> value = [&](int depth) -> std::string {
    const int kind = depth > 3 ? 0 : static_cast<int>(rng() % 4);
    if (kind < 2) return atoms[rng() % atoms.size()];
    std::string s = kind == 2 ? "[" : "{";
    const int n = static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      if (i) s += rng() % 2 ? "," : " , ";
      if (kind == 3) s += atoms[rng() % 3] + ":";
      s += value(depth + 1);
    }
    return s + (kind == 2 ? "]" : "}");
  };
  const std::string mutations = "\"\\{}[],: \x01\x80\xff" "0eE.-+u";
  int answered = 0, lines = 0;
  for (int i = 0; i < 50000; ++i) {
    // Members "t" and "a b" with any values; "text" once with a string (now and then twice, or
    // with another value).
    std::string line = "{";
    const int n = 1 + static_cast<int>(rng() % 4);
    const int text_at = static_cast<int>(rng() % n);
    for (int m = 0; m < n; ++m) {
      if (m) line += ",";
      if (m == text_at || rng() % 10 == 0)
        line += "\"text\": " + (rng() % 10 ? atoms[string_atoms[rng() % string_atoms.size()]] : value(1));
      else
        line += atoms[1 + rng() % 2] + ": " + value(1);
    }
    line += "}";
    if (rng() % 3 == 0) {
      const int edits = 1 + static_cast<int>(rng() % 3);
      for (int e = 0; e < edits; ++e) line[rng() % line.size()] = mutations[rng() % mutations.size()];
    }
    answered += agrees(line);
    lines += 1;
  }
  std::printf("%d of %d random lines answered without nlohmann-json\n", answered, lines);
  EXPECT_GT(answered, lines / 3);
}

}  // namespace
}  // namespace sambay
