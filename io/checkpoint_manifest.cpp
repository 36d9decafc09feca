#include "io/checkpoint_manifest.h"

#include "core/check.h"
#include "io/crc32c.h"
#include "io/durable_fs.h"
#include "io/mapped_file.h"

#include <fmt/format.h>

#include <charconv>
#include <filesystem>
#include <sstream>

namespace sambay {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMagicPrefix = "sambay-checkpoint-manifest ";
constexpr int kVersion = 2;

uint32_t file_crc32c(const std::string& path) {
  MappedFile f(path);
  return guard_mapped_reads([&] { return crc32c(f.data, f.size); });
}

int64_t parse_int(const std::string& s, const std::string& where) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0)
    fail("{}: '{}' is not a non-negative integer", where, s);
  return v;
}

uint32_t parse_hex32(const std::string& s, const std::string& where) {
  uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (s.size() != 8 || ec != std::errc() || end != s.data() + s.size())
    fail("{}: '{}' is not an 8-digit hexadecimal checksum", where, s);
  return v;
}

}  // namespace

void write_manifest(const std::string& dir, int64_t step, const std::string& run_id,
                    const std::vector<std::string>& files,
                    const std::vector<std::string>& checksummed,
                    const std::map<std::string, uint32_t>& content_checksums) {
  SAMBAY_CHECK(!run_id.empty() && run_id.find_first_of(" \n") == std::string::npos,
               "{}: run id '{}' must be one non-empty word", dir, run_id);
  std::string body = fmt::format("{}{}\nstep {}\nrun {}\n", kMagicPrefix, kVersion, step, run_id);
  for (const std::string& name : files) {
    const std::string path = (fs::path(dir) / name).string();
    std::error_code ec;
    const auto bytes = fs::file_size(path, ec);
    if (ec) fail("{}: cannot read its size: {}", path, ec.message());
    body += fmt::format("file {} {}", name, bytes);
    for (const std::string& c : checksummed)
      if (c == name) body += fmt::format(" crc32c {:08x}", file_crc32c(path));
    if (auto it = content_checksums.find(name); it != content_checksums.end())
      body += fmt::format(" content-crc32c {:08x}", it->second);
    body += '\n';
  }
  body += fmt::format("crc32c {:08x}\n", crc32c(body.data(), body.size()));
  write_file_durably((fs::path(dir) / "manifest.txt").string(), body);
}

Manifest verify_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.txt").string();
  if (!fs::exists(path)) fail("{}: missing: the checkpoint was not completed", path);
  const std::string text = read_text_file(path);
  // The last line is the checksum of everything before it.
  const size_t last = text.rfind("crc32c ");
  if (last == std::string::npos || (last > 0 && text[last - 1] != '\n') || text.back() != '\n')
    fail("{}: truncated or damaged (no final checksum line)", path);
  const std::string body = text.substr(0, last);
  const uint32_t stored = parse_hex32(text.substr(last + 7, text.size() - last - 8), path);
  if (stored != crc32c(body.data(), body.size()))
    fail("{}: corrupt (its checksum does not match its contents)", path);

  Manifest m;
  std::istringstream lines(body);
  std::string line;
  const std::string v1 = std::string(kMagicPrefix) + "1", v2 = std::string(kMagicPrefix) + "2";
  if (!std::getline(lines, line) || (line != v1 && line != v2))
    fail("{}: first line is not '{}' (or '{}', written before run ids)", path, v2, v1);
  m.version = line == v1 ? 1 : 2;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string s; words >> s;) w.push_back(s);
    if (w.size() == 2 && w[0] == "step") {
      m.step = parse_int(w[1], path);
    } else if (m.version >= 2 && w.size() == 2 && w[0] == "run") {
      m.run_id = w[1];
    } else if (w.size() >= 3 && w.size() % 2 == 1 && w[0] == "file") {
      ManifestEntry e{w[1], parse_int(w[2], path), std::nullopt, std::nullopt};
      for (size_t k = 3; k + 1 < w.size(); k += 2) {
        if (w[k] == "crc32c" && !e.crc32c)
          e.crc32c = parse_hex32(w[k + 1], path);
        else if (w[k] == "content-crc32c" && m.version >= 2 && !e.content_crc32c)
          e.content_crc32c = parse_hex32(w[k + 1], path);
        else
          fail("{}: unexpected line '{}'", path, line);
      }
      if (e.name.find('/') != std::string::npos) fail("{}: file name '{}' has a '/'", path, e.name);
      m.files.push_back(std::move(e));
    } else {
      fail("{}: unexpected line '{}'", path, line);
    }
  }
  if (m.version >= 2 && m.run_id.empty()) fail("{}: no 'run' line", path);
  for (const ManifestEntry& e : m.files) {
    const std::string fpath = (fs::path(dir) / e.name).string();
    std::error_code ec;
    const auto bytes = fs::file_size(fpath, ec);
    if (ec) fail("{}: missing or unreadable: {}", fpath, ec.message());
    if (static_cast<int64_t>(bytes) != e.bytes)
      fail("{}: {} bytes, the manifest says {} ({})", fpath, bytes, e.bytes,
           static_cast<int64_t>(bytes) < e.bytes ? "truncated" : "extended");
    if (e.crc32c && file_crc32c(fpath) != *e.crc32c)
      fail("{}: corrupt (whole-file crc32c does not match the manifest)", fpath);
  }
  return m;
}

}  // namespace sambay
