// A small INI reader for sweep specs and run directories: `[section]` headers, `key = value`
// lines, `#` or `;` comments. Keys keep their section as a prefix ("depth.depths"), the way
// sambay train reads its config files, and entries keep their file order (a key may repeat,
// e.g. data).
#pragma once

#include <string>
#include <vector>

namespace sambay::sweep {

struct IniEntry {
  std::string key;  // "section.key", or "key" before the first section
  std::string value;
  int line = 0;
};

struct Ini {
  std::string source;  // file name, for messages
  std::vector<IniEntry> entries;

  bool has(const std::string& key) const;
  // The last value of `key`; `fallback` when absent.
  std::string get(const std::string& key, const std::string& fallback = "") const;
  // The last value of `key`; throws naming the file and key when absent.
  std::string require(const std::string& key) const;
  std::vector<std::string> all(const std::string& key) const;
  double get_double(const std::string& key, double fallback) const;
  long long get_int(const std::string& key, long long fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  // Entries whose key starts with "section." (prefix removed), in file order.
  std::vector<IniEntry> section(const std::string& section) const;
};

Ini parse_ini(const std::string& text, const std::string& source);
Ini read_ini(const std::string& path);  // throws naming the path when unreadable

// "4, 8,12" -> {"4", "8", "12"} (commas and/or spaces separate items).
std::vector<std::string> split_list(const std::string& s);

}  // namespace sambay::sweep
