// What the `sambay data` subcommands do: tokenize text into an indexed dataset, describe a
// dataset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

enum class DocSplit {
  whole_file,  // each input file is one document
  paragraphs,  // each run of non-blank lines is one document (blank: only spaces, tabs, \r)
};

struct TokenizeReport {
  int64_t files = 0;
  int64_t documents = 0;
  int64_t tokens = 0;         // including one end-of-document token per document
  int64_t empty_skipped = 0;  // empty files (whole_file) are not written as documents
};

// Byte-tokenizes the inputs into out_prefix.bin/.idx (uint16 tokens), appending kByteEod to
// every document. Documents keep their bytes exactly; a paragraph's final newline is dropped.
TokenizeReport tokenize_text_files(const std::vector<std::string>& inputs,
                                   const std::string& out_prefix, DocSplit how);

// "12 files -> 340 documents, 51234 tokens (2 empty files skipped)"
std::string to_string(const TokenizeReport& report);

// A readable multi-line summary of any token source: format, dtype, tokens, documents, document
// length min/mean/max and a log2 histogram, and the range of token ids seen. Reads every token.
std::string dataset_stats(const std::string& path);

}  // namespace sambay
