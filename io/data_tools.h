// What the `sambay data` subcommands do: tokenize a corpus into an indexed dataset, describe a
// dataset.
#pragma once

#include "io/bpe_tokenizer.h"
#include "io/corpus_reader.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sambay {

struct TokenizeOptions {
  // "byte" (257 ids: the bytes and an end-of-document token) or a .tiktoken file.
  std::string tokenizer = "byte";
  BpeTokenizerOptions bpe;     // the BPE's pattern, special tokens, end-of-document token
  bool allow_special = false;  // text of a special token becomes its id (else ordinary text)
  std::optional<CorpusFormat> format;  // every input's format; unset: by each file's name
  std::string json_key = "text";
  DocSplit split = DocSplit::paragraphs;  // for plain text files
  int threads = 0;                        // encoding threads; 0: one per core
  bool progress = false;                  // a progress line on stderr
};

struct TokenizeReport {
  int64_t files = 0;
  int64_t documents = 0;
  int64_t tokens = 0;          // including one end-of-document token per document
  int64_t bytes = 0;           // of document text
  int64_t empty_skipped = 0;   // empty documents (and empty files) are not written
  int64_t blank_lines = 0;     // JSONL lines holding only whitespace, skipped
  int64_t unmatched_bytes = 0; // BPE: bytes the regex did not take (invalid UTF-8), kept
  double seconds = 0;
};

// Tokenizes the inputs into out_prefix.bin/.idx, one end-of-document token after every
// document (Megatron's --append-eod), the token type chosen by the vocabulary's size. Both files
// appear only when all is done. Documents are encoded on `threads` threads; the output does not
// depend on how many.
TokenizeReport tokenize_corpus(const std::vector<std::string>& inputs,
                               const std::string& out_prefix, const TokenizeOptions& options);

// "12 files -> 340 documents, 51234 tokens (2 empty documents skipped)"
std::string to_string(const TokenizeReport& report);

// A readable multi-line summary of any token source: format, dtype, tokens, documents, document
// length min/mean/max and a log2 histogram, and the range of token ids seen. Reads every token.
std::string dataset_stats(const std::string& path);

}  // namespace sambay
