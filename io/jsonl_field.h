// One string member of one JSONL line, read without building a document: the hot path of
// `sambay data tokenize`, where parsing every line into an nlohmann-json document was a tenth of
// the time. It answers only where the answer is certain: the line is valid JSON (RFC 8259, its
// strings valid UTF-8, its numbers finite) holding one object whose member `key` appears once,
// unescaped, and holds a string. Anything else (an error, an escaped or repeated key, nesting
// deeper than 64, a byte-order mark) gives nullopt, and the caller parses the line with
// nlohmann-json, whose value or error message stands.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sambay {

// The member's text: a view into `line` when it holds no escapes, else decoded into `scratch`.
std::optional<std::string_view> jsonl_string_field(std::string_view line, std::string_view key,
                                                   std::string& scratch);

}  // namespace sambay
