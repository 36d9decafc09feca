// PREFIX.tokenizer.json, written by `sambay data tokenize` beside PREFIX.bin/.idx: which
// tokenizer made the dataset. Training checks the model against it (every id must fit the
// vocabulary, documents must end with the model's eod_token) and refuses to blend datasets of
// different tokenizers; `sambay ckpt export` ships the tokenizer with the model.
#pragma once

#include "core/model_config.h"
#include "io/bpe_tokenizer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace sambay {

struct TokenizerNote {
  std::string path;       // of the note
  std::string tokenizer;  // "byte", "o200k_base", "cl100k_base" or "custom"
  std::string file;       // the BPE vocabulary file it was made with
  std::string fingerprint;
  int64_t vocab_size = 0;
  int32_t eod = -1;
  std::string eod_text;   // BPE: the special token ending documents
  std::string pattern;    // BPE: the PCRE2 pre-tokenisation pattern
  std::vector<SpecialToken> specials;
};

// Writes data_prefix.tokenizer.json for the byte tokenizer (bpe null) or a BPE.
void write_tokenizer_note(const std::string& data_prefix, const BpeTokenizer* bpe,
                          bool allow_special);

// The note of a dataset (a Megatron prefix or a .tok file: data_prefix.tokenizer.json), or
// nothing when there is none. A malformed note is an error naming it and the key.
std::optional<TokenizerNote> read_tokenizer_note(const std::string& data_prefix);

// The tokenizer of the training data (--data entries, "path[:weight]"), checked against the
// model: sources with notes must agree, their ids fit model.vocab, and their end-of-document id
// is model.eod_token (when the model names one). Nothing when no source has a note. Errors name
// the option, the note and the model field.
std::optional<TokenizerNote> check_data_tokenizer(const std::vector<std::string>& data,
                                                  const ModelConfig& model);

// The BPE a note describes, loaded from `file` (the note's own file when empty). Errors name
// the file and say how to give another.
std::shared_ptr<const BpeTokenizer> load_noted_tokenizer(const TokenizerNote& note,
                                                         const std::string& file = "");

}  // namespace sambay
