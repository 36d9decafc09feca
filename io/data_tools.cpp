#include "io/data_tools.h"

#include "core/check.h"
#include "io/byte_tokenizer.h"
#include "io/indexed_dataset.h"
#include "io/mapped_file.h"
#include "io/token_source.h"

#include <algorithm>
#include <limits>
#include <string_view>

namespace sambay {

namespace {

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

void append_text_document(IndexedDatasetWriter& writer, std::string_view text,
                          TokenizeReport& report) {
  std::vector<int32_t> tokens = byte_encode(text);
  tokens.push_back(kByteEod);
  append_document(writer, tokens.data(), static_cast<int64_t>(tokens.size()));
  report.documents += 1;
  report.tokens += static_cast<int64_t>(tokens.size());
}

// Paragraphs: maximal runs of non-blank lines, from the first line's start to the last line's
// end (its newline excluded).
void append_paragraphs(IndexedDatasetWriter& writer, std::string_view text,
                       TokenizeReport& report) {
  size_t paragraph_begin = std::string_view::npos, paragraph_end = 0;
  size_t at = 0;
  while (at < text.size()) {
    size_t newline = text.find('\n', at);
    size_t line_end = newline == std::string_view::npos ? text.size() : newline;
    std::string_view line = text.substr(at, line_end - at);
    if (is_blank(line)) {
      if (paragraph_begin != std::string_view::npos)
        append_text_document(writer, text.substr(paragraph_begin, paragraph_end - paragraph_begin),
                             report);
      paragraph_begin = std::string_view::npos;
    } else {
      if (paragraph_begin == std::string_view::npos) paragraph_begin = at;
      paragraph_end = line_end;
    }
    at = line_end + 1;
  }
  if (paragraph_begin != std::string_view::npos)
    append_text_document(writer, text.substr(paragraph_begin, paragraph_end - paragraph_begin),
                         report);
}

}  // namespace

TokenizeReport tokenize_text_files(const std::vector<std::string>& inputs,
                                   const std::string& out_prefix, DocSplit how) {
  SAMBAY_CHECK(!inputs.empty(), "no input files to tokenize into {}", out_prefix);
  TokenizeReport report;
  IndexedDatasetWriter writer =
      begin_indexed_dataset(out_prefix, token_dtype_for_vocab(kByteVocab));
  for (const std::string& input : inputs) {
    MappedFile file(input);
    std::string_view text(reinterpret_cast<const char*>(file.data), file.size);
    report.files += 1;
    if (how == DocSplit::paragraphs) {
      append_paragraphs(writer, text, report);
    } else if (text.empty()) {
      report.empty_skipped += 1;
    } else {
      append_text_document(writer, text, report);
    }
  }
  finish_indexed_dataset(writer);
  return report;
}

std::string to_string(const TokenizeReport& r) {
  std::string s =
      fmt::format("{} files -> {} documents, {} tokens", r.files, r.documents, r.tokens);
  if (r.empty_skipped > 0) s += fmt::format(" ({} empty files skipped)", r.empty_skipped);
  return s;
}

std::string dataset_stats(const std::string& path) {
  const TokenSource src = open_token_source(path);
  const int64_t n = num_tokens(src), docs = num_documents(src);
  std::string out;
  out += fmt::format("path:      {}\n", path);
  out += fmt::format(
      "format:    {}, {} tokens\n",
      src.format == TokenFormat::indexed ? "Megatron indexed dataset" : "sambay token file",
      token_dtype_name(token_dtype(src)));
  if (src.format == TokenFormat::flat) out += fmt::format("eod token: {}\n", src.flat.eod);
  out += fmt::format("tokens:    {}\n", n);

  // Document lengths, with a histogram over power-of-two buckets: bucket b holds [2^(b-1), 2^b),
  // bucket 0 the empty documents.
  int64_t min_len = std::numeric_limits<int64_t>::max(), max_len = 0;
  std::vector<int64_t> buckets(64, 0);
  for (int64_t d = 0; d < docs; ++d) {
    const int64_t len = document_start(src, d + 1) - document_start(src, d);
    min_len = std::min(min_len, len);
    max_len = std::max(max_len, len);
    int b = 0;
    while (b < 63 && (int64_t{1} << b) <= len) ++b;
    buckets[b] += 1;
  }
  out += fmt::format("documents: {}\n", docs);
  if (docs > 0) {
    out += fmt::format("doc length: min {}, mean {:.1f}, max {}\n", min_len,
                       static_cast<double>(n) / static_cast<double>(docs), max_len);
    out += "doc length histogram:\n";
    for (int b = 0; b < 64; ++b) {
      if (buckets[b] == 0) continue;
      std::string range =
          b == 0 ? "0" : fmt::format("[{}, {})", int64_t{1} << (b - 1), int64_t{1} << b);
      out += fmt::format("  {:>20}: {:>12} ({:5.1f}%)\n", range, buckets[b],
                         100.0 * static_cast<double>(buckets[b]) / static_cast<double>(docs));
    }
  }

  // Token ids: range and how many distinct ids occur (tracked below 2^24, above any real vocab).
  constexpr int64_t kTrackedIds = int64_t{1} << 24;
  std::vector<uint8_t> seen;
  int32_t min_id = std::numeric_limits<int32_t>::max(), max_id = -1;
  bool untracked = false;
  std::vector<int32_t> block(std::min<int64_t>(n, int64_t{1} << 20));
  for (int64_t at = 0; at < n; at += static_cast<int64_t>(block.size())) {
    const int64_t m = std::min<int64_t>(static_cast<int64_t>(block.size()), n - at);
    read_tokens(src, at, m, block.data());
    for (int64_t i = 0; i < m; ++i) {
      const int32_t t = block[i];
      min_id = std::min(min_id, t);
      max_id = std::max(max_id, t);
      if (t >= kTrackedIds) {
        untracked = true;
        continue;
      }
      if (static_cast<size_t>(t) >= seen.size()) seen.resize(static_cast<size_t>(t) + 1, 0);
      seen[t] = 1;
    }
  }
  if (n > 0) {
    int64_t distinct = std::count(seen.begin(), seen.end(), uint8_t{1});
    out += fmt::format("token ids: {}..{}, {}{} distinct\n", min_id, max_id, untracked ? ">" : "",
                       distinct);
  }
  return out;
}

}  // namespace sambay
