// A small JSON reader for the files sambay reads from other tools (safetensors headers,
// Hugging Face config.json), and string quoting for the JSON it writes.
// Numbers keep their text, so 64-bit integers (byte offsets) are read exactly.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sambay {

struct Json {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;  // a string's value, or a number as written
  std::vector<Json> items;                            // array
  std::vector<std::pair<std::string, Json>> members;  // object, in file order

  // The member named `key`, or null when absent (or this is not an object).
  const Json* find(const std::string& key) const;
  // Typed access; errors name `what` (e.g. "config.json: hidden_size").
  int64_t as_int(const std::string& what) const;
  double as_number(const std::string& what) const;
  const std::string& as_string(const std::string& what) const;
};

// Parses a whole document; errors name `where` and the byte offset.
Json parse_json(std::string_view text, const std::string& where);

// s as a JSON string literal, quotes included.
std::string json_quote(std::string_view s);

}  // namespace sambay
