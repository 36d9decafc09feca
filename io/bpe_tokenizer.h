// A tiktoken-compatible byte-level BPE tokenizer: text is split into pieces by a
// pre-tokenisation regex (PCRE2, Unicode properties, JIT-compiled; o200k's pattern by its
// hand-written matcher, io/o200k_split.h, which splits as PCRE2 does), and each piece is merged
// from single bytes, the adjacent pair whose concatenation has the lowest rank first (leftmost
// on ties), exactly as tiktoken does; a piece that is itself a token is that token. Special
// tokens (<|endoftext|> and the like) are whole-text matches outside the BPE.
//
// For o200k_base and cl100k_base, recognised by their contents, the pattern and special tokens
// are tiktoken's; other vocabularies need them given. Ids equal tiktoken's on any valid UTF-8
// text whose characters Unicode assigned by version 14 (the tables of Debian 12's PCRE2 10.42;
// tiktoken's regex crate knows later ones). Invalid UTF-8 is not rejected: the bytes the regex
// cannot match form pieces of their own, so decoding gives back every input byte.
//
// BpeTokenizer is immutable and shared by threads; each thread encodes with its own BpeEncoder.
#pragma once

#include "io/bpe_vocab.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;

namespace sambay {

class O200kSplitter;

struct SpecialToken {
  std::string text;
  int32_t id = -1;
};

// What the user may override; empty fields take the known vocabulary's values.
struct BpeTokenizerOptions {
  std::string pattern;                 // pre-tokenisation regex in PCRE2 syntax
  std::vector<SpecialToken> specials;  // added to (or replacing by text) the known ones
  std::string eod = "<|endoftext|>";   // the special token that ends a document
};

class BpeTokenizer {
 public:
  // Loads a .tiktoken file (plain or gzip). Errors name the file, or the option
  // (--pattern, --special, --eod) whose value is wrong or missing.
  static std::shared_ptr<const BpeTokenizer> load(const std::string& path,
                                                  const BpeTokenizerOptions& options = {});
  ~BpeTokenizer();

  const std::string& name() const { return name_; }  // "o200k_base", "cl100k_base" or "custom"
  const std::string& path() const { return vocab_.path; }
  const BpeVocab& vocab() const { return vocab_; }
  const std::string& pattern() const { return pattern_; }
  // The pattern for Hugging Face tokenizers' regex engine (exported tokenizer.json); a --pattern
  // is used as given.
  const std::string& hf_pattern() const { return hf_pattern_; }
  const std::vector<SpecialToken>& specials() const { return specials_; }
  int32_t eod() const { return eod_; }
  // One past the largest id (BPE ranks and special tokens).
  int64_t vocab_size() const { return vocab_size_; }
  // What cuts the text into pieces: "PCRE2 JIT", or the interpreter and why JIT compilation
  // failed (slower, same ids); for o200k's pattern the hand-written matcher, PCRE2 behind it.
  const std::string& regex_engine() const { return regex_engine_; }

  // Token bytes back to text; special ids give their text. Throws naming the position of an id
  // that is no token.
  std::string decode(std::span<const int32_t> ids) const;

 private:
  BpeTokenizer() = default;
  friend class BpeEncoder;
  std::string name_, pattern_, hf_pattern_, regex_engine_;
  BpeVocab vocab_;
  std::vector<SpecialToken> specials_;
  int32_t eod_ = -1;
  int64_t vocab_size_ = 0;
  pcre2_real_code_8* regex_ = nullptr;
  std::unique_ptr<const O200kSplitter> splitter_;  // set when the pattern is o200k's
};

// One thread's encoder: its regex match state, JIT stack and merge buffers.
class BpeEncoder {
 public:
  explicit BpeEncoder(std::shared_ptr<const BpeTokenizer> tokenizer);
  ~BpeEncoder();
  BpeEncoder(const BpeEncoder&) = delete;
  BpeEncoder& operator=(const BpeEncoder&) = delete;

  // Appends the ids of `text` to `out`, special-token text encoded as ordinary text (tiktoken's
  // encode_ordinary): a document cannot end itself early by containing "<|endoftext|>".
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out);
  // Like encode_ordinary, but the text of a special token becomes its id (tiktoken's encode
  // with allowed_special="all").
  void encode_with_specials(std::string_view text, std::vector<int32_t>& out);

  // The pieces encode_ordinary merges, in order, unmatched bytes included: for tests.
  void split(std::string_view text, std::vector<std::string_view>& pieces);

  // Bytes no regex match took, so far: invalid UTF-8 for the known patterns. They are encoded
  // as pieces of their own rather than dropped (tiktoken would drop them).
  int64_t unmatched_bytes() const { return unmatched_bytes_; }

  const BpeTokenizer& tokenizer() const { return *tok_; }

 private:
  // Calls on_piece(bytes, length) for each piece of the text, in order.
  template <class OnPiece>
  void for_each_piece(std::string_view text, OnPiece&& on_piece);
  // hash: bpe_hash of the piece where it is cacheable (2 to 128 bytes).
  void encode_piece(const char* p, size_t n, uint64_t hash, std::vector<int32_t>& out);
  void merge(const char* p, size_t n, std::vector<int32_t>& out);  // a piece not cached
  void merge_short(const char* p, size_t n, std::vector<int32_t>& out);
  void merge_long(const char* p, size_t n, std::vector<int32_t>& out);

  std::shared_ptr<const BpeTokenizer> tok_;
  struct Pcre;  // PCRE2 match data, match context and JIT stack
  std::unique_ptr<Pcre> pcre_;
  // The merges' working memory, kept between pieces: per part (merge_short: by index;
  // merge_long: by start byte) its start, its token, and (merge_short) the token of it and the
  // next part together; merge_long's links and tournament tree.
  std::vector<uint32_t> part_start_;
  std::vector<int32_t> part_rank_;
  std::vector<int32_t> pair_rank_;
  std::vector<uint32_t> next_, prev_;
  std::vector<uint64_t> tree_;
  // The ids of recently seen pieces, direct-mapped by hash: words recur, and a hit costs one
  // probe instead of the merges. A piece of n bytes has at most n tokens, so every piece up to
  // 22 bytes (almost all) fits its entry (two cache lines; 32,768 entries: 4 MiB), and pieces up
  // to 128 bytes (runs of spaces or symbols, long words) of up to 93 tokens fit theirs (eight
  // lines; 4,096 entries: 2 MiB).
  template <size_t kBytes, size_t kIds>
  struct alignas(64) CachedPiece {
    uint64_t hash = 0;
    uint8_t length = 0;  // 0: empty
    uint8_t count = 0;
    char bytes[kBytes];
    int32_t ids[kIds];
  };
  using ShortPiece = CachedPiece<22, 22>;
  using LongPiece = CachedPiece<128, 93>;
  static_assert(sizeof(ShortPiece) == 128 && sizeof(LongPiece) == 512);
  template <class Entry>
  void encode_cached(std::vector<Entry>& cache, int bits, const char* p, size_t n, uint64_t hash,
                     std::vector<int32_t>& out);
  std::vector<ShortPiece> short_cache_;
  std::vector<LongPiece> long_cache_;
  int64_t unmatched_bytes_ = 0;
};

}  // namespace sambay
