// The one reader of sambay's config text: `sambay train --config` files, the resolved
// config.ini of a run directory and the train config saved in checkpoints, the model config text
// of checkpoints, sweep specs. `[section]` headers, `key = value` lines, comments from `#` to the
// end of a line or on lines starting with `;`. Keys keep their section as a prefix
// ("model.d_model" under [model]), and entries keep their file order and line (a key may
// repeat, e.g. data), so every error names the file and line.
#pragma once

#include <string>
#include <vector>

namespace sambay {

struct ConfigEntry {
  std::string key;  // "section.key", or "key" before the first section
  std::string value;
  int line = 0;
};

struct ConfigFile {
  std::string source;  // file name (or what the text is), for messages
  std::vector<ConfigEntry> entries;

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
  std::vector<ConfigEntry> section(const std::string& section) const;
};

ConfigFile parse_config_text(const std::string& text, const std::string& source);
ConfigFile read_config_file(const std::string& path);  // throws naming the path when unreadable

// "4, 8,12" -> {"4", "8", "12"} (commas and/or spaces separate items).
std::vector<std::string> split_list(const std::string& s);

}  // namespace sambay
