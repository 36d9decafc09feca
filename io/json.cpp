#include "io/json.h"

#include "core/check.h"

#include <set>
#include <vector>

namespace sambay {

namespace {

constexpr int kMaxDepth = 64;

}  // namespace

Json parse_json(std::string_view text, const std::string& where) {
  std::vector<std::set<std::string>> keys;  // of each open object
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth >= kMaxDepth) fail("{}: invalid JSON: nested too deeply (over {})", where, kMaxDepth);
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.back().insert(parsed.get<std::string>()).second)
          fail("{}: invalid JSON: key '{}' appears twice in one object", where,
               parsed.get<std::string>());
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), check);
  } catch (const Json::exception& e) {
    fail("{}: invalid JSON: {}", where, e.what());
  }
}

const Json* json_find(const Json& object, const std::string& key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

int64_t json_int(const Json& value, const std::string& what) {
  if (value.is_number_integer()) {
    if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(INT64_MAX))
      fail("{}: {} does not fit a 64-bit integer", what, value.dump());
    return value.get<int64_t>();
  }
  fail("{}: expected an integer, found {} {}", what, value.type_name(), value.dump());
}

double json_number(const Json& value, const std::string& what) {
  if (!value.is_number()) fail("{}: expected a number, found {} {}", what, value.type_name(), value.dump());
  return value.get<double>();
}

const std::string& json_string(const Json& value, const std::string& what) {
  if (!value.is_string()) fail("{}: expected a string, found {} {}", what, value.type_name(), value.dump());
  return value.get_ref<const std::string&>();
}

}  // namespace sambay
