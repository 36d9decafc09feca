// JSON through nlohmann-json, in sambay's error style: every document sambay reads from other
// tools (safetensors headers, Hugging Face configs, metrics, dataset notes) is parsed here, so
// that a bad one is an error naming the file and the key. Objects keep their keys in file order
// (ordered_json), so what sambay writes reads in a sensible order too.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace sambay {

using Json = nlohmann::ordered_json;

// Parses a whole document. Errors name `where` and nlohmann's description of the place; a key
// given twice in one object, or nesting deeper than 64, is refused too (no silent last-wins).
Json parse_json(std::string_view text, const std::string& where);

// The member `key` of an object, or null when absent (or `object` is not an object).
const Json* json_find(const Json& object, const std::string& key);

// Typed values; errors name `what` (e.g. "config.json: hidden_size") and the type found.
int64_t json_int(const Json& value, const std::string& what);
double json_number(const Json& value, const std::string& what);
const std::string& json_string(const Json& value, const std::string& what);

}  // namespace sambay
