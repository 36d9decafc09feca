#include "io/corpus_reader.h"

#include "core/check.h"
#include "io/jsonl_field.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace sambay {

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

}  // namespace

CorpusFormat corpus_format_of(const std::string& path) {
  std::string name = path;
  if (ends_with(name, ".gz")) name.resize(name.size() - 3);
  return ends_with(name, ".jsonl") || ends_with(name, ".json") ? CorpusFormat::jsonl
                                                                : CorpusFormat::text;
}

struct CorpusReader::File {
  gzFile gz = nullptr;
  std::string buf;   // bytes read and not yet taken
  size_t pos = 0;    // the next line starts here
  size_t scan = 0;   // no newline in buf[pos, scan)
  int64_t line = 0;  // lines taken
  bool eof = false;
  ~File() {
    if (gz) gzclose(gz);
  }
};

CorpusReader::CorpusReader(std::vector<std::string> inputs, const CorpusFormat* format,
                           DocSplit split)
    : inputs_(std::move(inputs)), split_(split) {
  SAMBAY_CHECK(!inputs_.empty(), "no input files");
  for (const std::string& path : inputs_) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec) fail("{}: cannot read: {}", path, ec.message());
    bytes_total_ += static_cast<int64_t>(size);
    formats_.push_back(format ? *format : corpus_format_of(path));
  }
}

CorpusReader::~CorpusReader() = default;

int64_t CorpusReader::bytes_done() const {
  return bytes_closed_ + (open_ ? static_cast<int64_t>(gzoffset(open_->gz)) : 0);
}

bool CorpusReader::open_next_file() {
  if (file_ + 1 >= static_cast<int32_t>(inputs_.size())) return false;
  ++file_;
  const std::string& path = inputs_[file_];
  open_ = std::make_unique<File>();
  errno = 0;
  open_->gz = gzopen(path.c_str(), "rb");
  if (!open_->gz) fail("{}: cannot open: {}", path, std::strerror(errno ? errno : ENOMEM));
  gzbuffer(open_->gz, kReadChunk);
  stats_.files += 1;
  return true;
}

bool CorpusReader::next_line(std::string_view& line) {
  File& f = *open_;
  for (;;) {
    const size_t newline = f.buf.find('\n', f.scan);
    if (newline != std::string::npos) {
      line = std::string_view(f.buf).substr(f.pos, newline - f.pos);
      f.pos = f.scan = newline + 1;
      f.line += 1;
      return true;
    }
    if (f.eof) {
      if (f.pos == f.buf.size()) return false;
      line = std::string_view(f.buf).substr(f.pos);
      f.pos = f.scan = f.buf.size();
      f.line += 1;
      return true;
    }
    f.buf.erase(0, f.pos);
    f.scan = f.buf.size();
    f.pos = 0;
    f.buf.resize(f.scan + kReadChunk);
    const int n = gzread(f.gz, f.buf.data() + f.scan, static_cast<unsigned>(kReadChunk));
    if (n < 0) {
      int code = 0;
      fail("{}: cannot read: {}", inputs_[file_], gzerror(f.gz, &code));
    }
    f.buf.resize(f.scan + static_cast<size_t>(n));
    f.eof = n == 0;
  }
}

bool CorpusReader::next(DocumentBatch& batch, size_t target_bytes) {
  batch.clear();
  for (;;) {
    if (!open_ && !open_next_file()) return false;
    batch.format = formats_[file_];
    auto close_file = [&] {
      bytes_closed_ += static_cast<int64_t>(std::filesystem::file_size(inputs_[file_]));
      open_.reset();
    };
    if (batch.format == CorpusFormat::text && split_ == DocSplit::whole_file) {
      for (int n = 1; n > 0;) {
        const size_t have = batch.bytes.size();
        batch.bytes.resize(have + kReadChunk);
        n = gzread(open_->gz, batch.bytes.data() + have, static_cast<unsigned>(kReadChunk));
        if (n < 0) {
          int code = 0;
          fail("{}: cannot read: {}", inputs_[file_], gzerror(open_->gz, &code));
        }
        batch.bytes.resize(have + static_cast<size_t>(n));
      }
      close_file();
      if (batch.bytes.empty()) {
        stats_.empty_files += 1;
        continue;
      }
      batch.ends.push_back(batch.bytes.size());
      batch.origins.push_back({file_, 1});
      return true;
    }
    bool in_paragraph = false;
    std::string_view line;
    while (batch.bytes.size() < target_bytes || in_paragraph) {
      if (!next_line(line)) {
        if (in_paragraph) batch.ends.push_back(batch.bytes.size());
        close_file();
        break;
      }
      const bool blank = is_blank(line);
      if (batch.format == CorpusFormat::jsonl) {
        if (blank) {
          stats_.blank_lines += 1;
          continue;
        }
        batch.bytes += line;
        batch.ends.push_back(batch.bytes.size());
        batch.origins.push_back({file_, open_->line});
      } else if (blank) {
        if (in_paragraph) batch.ends.push_back(batch.bytes.size());
        in_paragraph = false;
      } else {
        if (in_paragraph) {
          batch.bytes += '\n';
        } else {
          batch.origins.push_back({file_, open_->line});
          in_paragraph = true;
        }
        batch.bytes += line;
      }
    }
    if (!batch.ends.empty()) return true;
  }
}

std::string_view document_text(const DocumentBatch& batch, size_t i, const std::string& json_key,
                               const std::vector<std::string>& inputs, std::string& scratch) {
  const std::string_view raw = batch.raw(i);
  if (batch.format == CorpusFormat::text) return raw;
  if (const std::optional<std::string_view> text = jsonl_string_field(raw, json_key, scratch))
    return *text;
  // Errors and unusual lines (escaped or repeated keys, deep nesting): nlohmann-json decides.
  const DocumentBatch::Origin& at = batch.origins[i];
  const std::string& path = inputs[at.file];
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(raw);
  } catch (const nlohmann::json::exception& e) {
    fail("{}:{}: not valid JSON: {}", path, at.line, e.what());
  }
  if (!j.is_object())
    fail("{}:{}: a JSONL line must hold an object, this one holds {}", path, at.line,
         j.type_name());
  auto field = j.find(json_key);
  if (field == j.end())
    fail("{}:{}: no key '{}' (--json_key names the field holding the document)", path, at.line,
         json_key);
  if (!field->is_string())
    fail("{}:{}: key '{}' holds {}, not a string", path, at.line, json_key, field->type_name());
  scratch = std::move(field->get_ref<std::string&>());
  return scratch;
}

}  // namespace sambay
