// Documents streamed from a corpus's files, in order, a batch at a time, so that a corpus of any
// size passes through in bounded memory. Files may be gzip-compressed (read as they stream).
//   JSONL (Megatron's input): one JSON object per line, the document in a string field
//     (`text` unless told); blank lines are skipped and counted.
//   Plain text: each file one document, or each paragraph (maximal run of non-blank lines; a
//     blank line holds only spaces, tabs and \r) one document, its final newline dropped.
// JSON is parsed by whoever takes the documents (the tokenizer's threads): the reader only cuts
// lines, so it keeps ahead of many parsing threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sambay {

enum class DocSplit {
  whole_file,  // each input file is one document
  paragraphs,  // each run of non-blank lines is one document
};

enum class CorpusFormat { jsonl, text };

// jsonl for names ending in .jsonl or .json (before an optional .gz), text otherwise.
CorpusFormat corpus_format_of(const std::string& path);

// Documents back to back. A JSONL document is its raw line (document_text() extracts the field).
struct DocumentBatch {
  std::string bytes;
  std::vector<size_t> ends;  // document i is bytes[ends[i - 1], ends[i]) (ends[-1] = 0)
  struct Origin {
    int32_t file = 0;   // index into the reader's inputs
    int64_t line = 0;   // 1-based first line of the document
  };
  std::vector<Origin> origins;
  CorpusFormat format = CorpusFormat::text;

  size_t size() const { return ends.size(); }
  std::string_view raw(size_t i) const {
    const size_t begin = i ? ends[i - 1] : 0;
    return std::string_view(bytes).substr(begin, ends[i] - begin);
  }
  void clear() { bytes.clear(), ends.clear(), origins.clear(); }
};

struct CorpusStats {
  int64_t files = 0;
  int64_t blank_lines = 0;  // JSONL lines holding only whitespace
  int64_t empty_files = 0;  // whole-file documents with no bytes (not passed on)
};

class CorpusReader {
 public:
  // `format`: the format of every input, or null to choose by each file's name.
  CorpusReader(std::vector<std::string> inputs, const CorpusFormat* format, DocSplit split);
  ~CorpusReader();
  CorpusReader(const CorpusReader&) = delete;
  CorpusReader& operator=(const CorpusReader&) = delete;

  // Replaces `batch` with the next documents: at least one, and about `target_bytes` of them
  // (whole documents, so a long one may exceed it); all from one file. False at the end.
  // Errors name the file.
  bool next(DocumentBatch& batch, size_t target_bytes);

  const std::vector<std::string>& inputs() const { return inputs_; }
  // File bytes consumed so far (compressed bytes for gzip) and in all, for progress and ETA.
  int64_t bytes_done() const;
  int64_t bytes_total() const { return bytes_total_; }
  const CorpusStats& stats() const { return stats_; }

 private:
  bool open_next_file();
  bool next_line(std::string_view& line);  // false at the end of the current file

  std::vector<std::string> inputs_;
  std::vector<CorpusFormat> formats_;
  DocSplit split_;
  int32_t file_ = -1;
  struct File;
  std::unique_ptr<File> open_;
  int64_t bytes_total_ = 0, bytes_closed_ = 0;
  CorpusStats stats_;
};

// The text of document i: a JSONL line's `json_key` string (jsonl_string_field, nlohmann-json
// where it cannot answer), or the raw bytes. Errors name the file, the line and the key.
std::string_view document_text(const DocumentBatch& batch, size_t i, const std::string& json_key,
                               const std::vector<std::string>& inputs, std::string& scratch);

}  // namespace sambay
