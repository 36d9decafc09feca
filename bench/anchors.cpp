#include "bench/anchors.h"

#include "core/check.h"

#include <fstream>
#include <regex>

namespace sambay::bench {

Anchors Anchors::read(const std::string& path) {
  std::ifstream in(path);
  SAMBAY_CHECK(in.good(), "--anchors {}: cannot read the file", path);
  // Lines as torch_anchors.py prints them.
  static const std::regex sdpa(
      R"(^anchor attention sdpa-(\S+) (B\d+ L\d+ H\d+ d\d+ dv\d+) causal: fwd ([0-9.]+) ms .*; bwd ([0-9.]+) ms)");
  static const std::regex flex(
      R"(^anchor attention flex window (\d+) (B\d+ L\d+ H\d+ d\d+): fwd ([0-9.]+) ms .*; bwd ([0-9.]+) ms)");
  static const std::regex ce(
      R"(^anchor tied head \+ CE .* (n\d+ V\d+ d\d+): fwd ([0-9.]+) ms .*; bwd ([0-9.]+) ms)");
  static const std::regex tpp(R"(^anchor torch.compile Transformer\+\+ \S+ (B\d+ L\d+): ([0-9.]+) ms/step)");
  Anchors a;
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, sdpa)) {
      const std::string key = "attention " + m[1].str() + " " + m[2].str();
      a.ms_[key + " fwd"] = std::stod(m[3]);
      a.ms_[key + " bwd"] = std::stod(m[4]);
    } else if (std::regex_search(line, m, flex)) {
      const std::string key = "attention flex w" + m[1].str() + " " + m[2].str();
      a.ms_[key + " fwd"] = std::stod(m[3]);
      a.ms_[key + " bwd"] = std::stod(m[4]);
    } else if (std::regex_search(line, m, ce)) {
      a.ms_["ce " + m[1].str() + " fwd"] = std::stod(m[2]);
      a.ms_["ce " + m[1].str() + " bwd"] = std::stod(m[3]);
    } else if (std::regex_search(line, m, tpp)) {
      a.ms_["tpp " + m[1].str() + " step"] = std::stod(m[2]);
    }
  }
  SAMBAY_CHECK(!a.ms_.empty(), "--anchors {}: no anchor line found (is it torch_anchors.py's output?)",
               path);
  return a;
}

std::optional<double> Anchors::ms(const std::string& key) const {
  const std::string both = " fwd+bwd";
  if (key.size() > both.size() && key.compare(key.size() - both.size(), both.size(), both) == 0) {
    const std::string base = key.substr(0, key.size() - both.size());
    const auto f = ms(base + " fwd"), b = ms(base + " bwd");
    if (f && b) return *f + *b;
    return std::nullopt;
  }
  const auto it = ms_.find(key);
  if (it == ms_.end()) return std::nullopt;
  return it->second;
}

}  // namespace sambay::bench
