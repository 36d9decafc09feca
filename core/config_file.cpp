#include "core/config_file.h"

#include "core/check.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace sambay {

namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

}  // namespace

bool ConfigFile::has(const std::string& key) const {
  for (const ConfigEntry& e : entries)
    if (e.key == key) return true;
  return false;
}

std::string ConfigFile::get(const std::string& key, const std::string& fallback) const {
  std::string value = fallback;
  for (const ConfigEntry& e : entries)
    if (e.key == key) value = e.value;
  return value;
}

std::string ConfigFile::require(const std::string& key) const {
  if (!has(key)) fail("{}: '{}' is missing", source, key);
  return get(key);
}

std::vector<std::string> ConfigFile::all(const std::string& key) const {
  std::vector<std::string> values;
  for (const ConfigEntry& e : entries)
    if (e.key == key) values.push_back(e.value);
  return values;
}

double ConfigFile::get_double(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const std::string v = get(key);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') fail("{}: {} = '{}' is not a number", source, key, v);
  return x;
}

long long ConfigFile::get_int(const std::string& key, long long fallback) const {
  if (!has(key)) return fallback;
  const std::string v = get(key);
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') fail("{}: {} = '{}' is not an integer", source, key, v);
  return x;
}

bool ConfigFile::get_bool(const std::string& key, bool fallback) const {
  if (!has(key)) return fallback;
  const std::string v = get(key);
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  fail("{}: {} = '{}' is not true or false", source, key, v);
}

std::vector<ConfigEntry> ConfigFile::section(const std::string& name) const {
  std::vector<ConfigEntry> out;
  const std::string prefix = name + ".";
  for (const ConfigEntry& e : entries)
    if (e.key.rfind(prefix, 0) == 0) out.push_back({e.key.substr(prefix.size()), e.value, e.line});
  return out;
}

ConfigFile parse_config_text(const std::string& text, const std::string& source) {
  ConfigFile ini;
  ini.source = source;
  std::istringstream in(text);
  std::string raw, section;
  int n = 0;
  while (std::getline(in, raw)) {
    ++n;
    const size_t hash = raw.find('#');
    const std::string line = trim(hash == std::string::npos ? raw : raw.substr(0, hash));
    if (line.empty() || line.front() == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') fail("{}:{}: '{}' is not a [section] header", source, n, line);
      section = trim(line.substr(1, line.size() - 2));
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == std::string::npos) fail("{}:{}: '{}' is not 'key = value'", source, n, line);
    const std::string key = trim(line.substr(0, eq));
    if (key.empty()) fail("{}:{}: a value without a key", source, n);
    ini.entries.push_back({section.empty() ? key : section + "." + key, trim(line.substr(eq + 1)), n});
  }
  return ini;
}

ConfigFile read_config_file(const std::string& path) {
  std::ifstream file(path);
  if (!file) fail("{}: cannot open", path);
  std::stringstream ss;
  ss << file.rdbuf();
  return parse_config_text(ss.str(), path);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> items;
  std::string item;
  for (char ch : s + ",") {
    if (ch == ',' || ch == ' ' || ch == '\t') {
      if (!item.empty()) items.push_back(item);
      item.clear();
    } else {
      item += ch;
    }
  }
  return items;
}

}  // namespace sambay
