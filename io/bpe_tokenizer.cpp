#include "io/bpe_tokenizer.h"

#include "core/check.h"
#include "io/o200k_split.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstring>
#include <iterator>
#include <functional>
#include <fmt/format.h>

namespace sambay {

namespace {

// cl100k_base's pattern in PCRE2 syntax (o200k_base's is in o200k_split.h, beside its matcher).
// Whitespace is spelled out as there; tiktoken's $ is the end of the text (PCRE2's also matches
// before a final newline): \z.
#define SAMBAY_WS "\\t-\\r\\x{85}\\p{Z}"
constexpr const char* kCl100kPattern =
    "'(?i:[sdmt]|ll|ve|re)"
    "|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++"
    "|\\p{N}{1,3}+"
    "| ?[^" SAMBAY_WS "\\p{L}\\p{N}]++[\\r\\n]*+"
    "|[" SAMBAY_WS "]++\\z"
    "|[" SAMBAY_WS "]*[\\r\\n]"
    "|[" SAMBAY_WS "]+(?![^" SAMBAY_WS "])"
    "|[" SAMBAY_WS "]";
#undef SAMBAY_WS

// The patterns for Hugging Face tokenizers' regex engine (Oniguruma): tiktoken's for o200k;
// for cl100k without possessive quantifiers (Oniguruma reads "{1,3}+" as a repeated group, and
// here possession changes no match) and with \z for tiktoken's end-of-text $ (Oniguruma's $
// also matches before every newline).
constexpr const char* kO200kHf =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kCl100kHf =
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s+\\z|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

struct KnownVocab {
  const char* name;
  int32_t size;
  uint32_t fingerprint;  // BpeVocab::fingerprint
  const char* pattern;           // PCRE2
  const char* hf_pattern;  // for Hugging Face tokenizers
  std::vector<SpecialToken> specials;
};

const std::vector<KnownVocab>& known_vocabularies() {
  static const std::vector<KnownVocab> known = {
      {"o200k_base", 199998, 0x05124340u, kO200kPattern, kO200kHf,
       {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
      {"cl100k_base", 100256, 0x09c128b2u, kCl100kPattern, kCl100kHf,
       {{"<|endoftext|>", 100257},
        {"<|fim_prefix|>", 100258},
        {"<|fim_middle|>", 100259},
        {"<|fim_suffix|>", 100260},
        {"<|endofprompt|>", 100276}}},
  };
  return known;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Pieces longer than this merge with a heap (O(n log n)); shorter ones by tiktoken's scan
// (O(n^2), faster for the few bytes of almost every piece).
constexpr size_t kShortPiece = 64;

constexpr int32_t kNoRank = INT32_MAX;

constexpr int kShortCacheBits = 15, kLongCacheBits = 12;

}  // namespace

struct BpeEncoder::Pcre {
  pcre2_match_data* match = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  ~Pcre() {
    pcre2_match_data_free(match);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};

std::shared_ptr<const BpeTokenizer> BpeTokenizer::load(const std::string& path,
                                                        const BpeTokenizerOptions& options) {
  std::shared_ptr<BpeTokenizer> t(new BpeTokenizer());
  t->vocab_ = load_tiktoken_vocab(path);
  const KnownVocab* known = nullptr;
  for (const KnownVocab& k : known_vocabularies())
    if (k.size == t->vocab_.size() && k.fingerprint == t->vocab_.fingerprint) known = &k;
  t->name_ = known ? known->name : "custom";

  if (!options.pattern.empty())
    t->pattern_ = t->hf_pattern_ = options.pattern;
  else if (known)
    t->pattern_ = known->pattern, t->hf_pattern_ = known->hf_pattern;
  else
    fail("{}: a vocabulary of {} tokens that sambay does not know (fingerprint {:08x}; it knows "
         "o200k_base and cl100k_base): give its pre-tokenisation regex with --pattern",
         path, t->vocab_.size(), t->vocab_.fingerprint);

  if (known) t->specials_ = known->specials;
  for (const SpecialToken& s : options.specials) {
    if (s.text.empty()) fail("option --special: the token's text is empty");
    if (s.id < t->vocab_.size())
      fail("option --special: id {} of '{}' is a BPE token of {} (ranks 0..{}); special ids "
           "come after them",
           s.id, s.text, path, t->vocab_.size() - 1);
    auto same = std::find_if(t->specials_.begin(), t->specials_.end(),
                             [&](const SpecialToken& k) { return k.text == s.text; });
    if (same != t->specials_.end())
      same->id = s.id;
    else
      t->specials_.push_back(s);
  }
  t->vocab_size_ = t->vocab_.size();
  for (size_t i = 0; i < t->specials_.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (t->specials_[j].id == t->specials_[i].id)
        fail("option --special: '{}' and '{}' have the same id {}", t->specials_[j].text,
             t->specials_[i].text, t->specials_[i].id);
    t->vocab_size_ = std::max<int64_t>(t->vocab_size_, int64_t{t->specials_[i].id} + 1);
    if (t->specials_[i].text == options.eod) t->eod_ = t->specials_[i].id;
  }
  if (t->eod_ < 0) {
    std::string names;
    for (const SpecialToken& s : t->specials_) names += (names.empty() ? "" : ", ") + s.text;
    fail("option --eod: '{}' is not a special token of {} ({}); add it with --special TEXT=ID",
         options.eod, path, names.empty() ? "it has none" : "it has " + names);
  }

  int code = 0;
  PCRE2_SIZE offset = 0;
  t->regex_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(t->pattern_.data()), t->pattern_.size(),
                            PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset,
                            nullptr);
  if (!t->regex_)
    fail("option --pattern: PCRE2 cannot compile it at offset {}: {}", offset, pcre2_message(code));
  const int jit = pcre2_jit_compile(t->regex_, PCRE2_JIT_COMPLETE);
  t->regex_engine_ = jit == 0 ? "PCRE2 JIT" : "PCRE2 interpreter (no JIT: " + pcre2_message(jit) + ")";
  if (t->pattern_ == kO200kPattern) {
    t->splitter_ = std::make_unique<const O200kSplitter>();
    t->regex_engine_ = "o200k matcher (" + t->regex_engine_ + " where the text is not UTF-8)";
  }
  return t;
}

BpeTokenizer::~BpeTokenizer() { pcre2_code_free(regex_); }

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < vocab_.size()) {
      out += vocab_.token(id);
      continue;
    }
    auto s = std::find_if(specials_.begin(), specials_.end(),
                          [&](const SpecialToken& k) { return k.id == id; });
    if (s == specials_.end())
      fail("id {} at position {} is not a token of {}", id, i, vocab_.path);
    out += s->text;
  }
  return out;
}

BpeEncoder::BpeEncoder(std::shared_ptr<const BpeTokenizer> tokenizer)
    : tok_(std::move(tokenizer)), pcre_(std::make_unique<Pcre>()) {
  pcre_->match = pcre2_match_data_create_from_pattern(tok_->regex_, nullptr);
  pcre_->context = pcre2_match_context_create(nullptr);
  // Long runs of letters or spaces backtrack deeply; the stack grows on demand up to 256 MiB.
  pcre_->stack = pcre2_jit_stack_create(64 * 1024, 256 * 1024 * 1024, nullptr);
  SAMBAY_CHECK(pcre_->match && pcre_->context && pcre_->stack, "PCRE2 is out of memory");
  pcre2_jit_stack_assign(pcre_->context, nullptr, pcre_->stack);
  pcre2_set_match_limit(pcre_->context, UINT32_MAX);
  short_cache_.resize(size_t{1} << kShortCacheBits);
  long_cache_.resize(size_t{1} << kLongCacheBits);
}

BpeEncoder::~BpeEncoder() = default;

template <class OnPiece>
void BpeEncoder::for_each_piece(std::string_view text, OnPiece&& on_piece) {
  const O200kSplitter* splitter = tok_->splitter_.get();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t at = 0;
  while (at < text.size()) {
    if (splitter) {
      if (const size_t end = splitter->match(text, at)) {
        on_piece(text.data() + at, end - at);
        at = end;
        continue;
      }
    }
    const int rc = pcre2_match(tok_->regex_, subject, text.size(), at, 0, pcre_->match,
                               pcre_->context);
    if (rc == PCRE2_ERROR_NOMATCH) {
      unmatched_bytes_ += static_cast<int64_t>(text.size() - at);
      on_piece(text.data() + at, text.size() - at);
      return;
    }
    if (rc < 0)
      fail("pre-tokenisation regex failed at byte {} of a {}-byte text: {}", at, text.size(),
           pcre2_message(rc));
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(pcre_->match);
    if (span[1] == span[0])
      fail("option --pattern: the pre-tokenisation regex matched the empty string at byte {}; "
           "every match must take at least one character",
           span[0]);
    if (span[0] > at) {  // bytes no match took: invalid UTF-8 for the known patterns
      unmatched_bytes_ += static_cast<int64_t>(span[0] - at);
      on_piece(text.data() + at, span[0] - at);
    }
    on_piece(text.data() + span[0], span[1] - span[0]);
    at = span[1];
  }
}

void BpeEncoder::encode_ordinary(std::string_view text, std::vector<int32_t>& out) {
  // Pieces are encoded eight at a time: the cache entries of all eight are fetched (a prefetch
  // each) before the first is read, so that their memory latencies overlap.
  constexpr size_t kAhead = 8;
  struct Piece {
    const char* p;
    size_t n;
    uint64_t hash;
  };
  Piece ahead[kAhead];
  size_t count = 0;
  auto encode_ahead = [&] {
    for (size_t i = 0; i < count; ++i) encode_piece(ahead[i].p, ahead[i].n, ahead[i].hash, out);
    count = 0;
  };
  for_each_piece(text, [&](const char* p, size_t n) {
    uint64_t hash = 0;
    if (n >= 2 && n <= sizeof(LongPiece::bytes)) {
      hash = bpe_hash(bpe_head(p, n), p, n);
      if (n <= sizeof(ShortPiece::bytes))
        __builtin_prefetch(&short_cache_[hash >> (64 - kShortCacheBits)]);
      else
        __builtin_prefetch(&long_cache_[hash >> (64 - kLongCacheBits)]);
    }
    ahead[count++] = {p, n, hash};
    if (count == kAhead) encode_ahead();
  });
  encode_ahead();
}

void BpeEncoder::split(std::string_view text, std::vector<std::string_view>& pieces) {
  for_each_piece(text, [&](const char* p, size_t n) { pieces.emplace_back(p, n); });
}

void BpeEncoder::encode_with_specials(std::string_view text, std::vector<int32_t>& out) {
  const std::vector<SpecialToken>& specials = tok_->specials_;
  while (!text.empty()) {
    // The earliest special token; the longest of those starting there.
    size_t best = std::string_view::npos, best_len = 0;
    int32_t best_id = -1;
    for (const SpecialToken& s : specials) {
      const size_t at = text.find(s.text);
      if (at < best || (at == best && at != std::string_view::npos && s.text.size() > best_len))
        best = at, best_len = s.text.size(), best_id = s.id;
    }
    if (best == std::string_view::npos) break;
    encode_ordinary(text.substr(0, best), out);
    out.push_back(best_id);
    text.remove_prefix(best + best_len);
  }
  encode_ordinary(text, out);
}

void BpeEncoder::encode_piece(const char* p, size_t n, uint64_t hash,
                              std::vector<int32_t>& out) {
  if (n == 1)
    out.push_back(tok_->vocab_.byte_rank[static_cast<unsigned char>(*p)]);
  else if (n <= sizeof(ShortPiece::bytes))
    encode_cached(short_cache_, kShortCacheBits, p, n, hash, out);
  else if (n <= sizeof(LongPiece::bytes))
    encode_cached(long_cache_, kLongCacheBits, p, n, hash, out);
  else
    merge(p, n, out);
}

template <class Entry>
void BpeEncoder::encode_cached(std::vector<Entry>& cache, int bits, const char* p, size_t n,
                               uint64_t hash, std::vector<int32_t>& out) {
  Entry& slot = cache[hash >> (64 - bits)];
  if (slot.hash == hash && slot.length == n && std::memcmp(slot.bytes, p, n) == 0) {
    out.insert(out.end(), slot.ids, slot.ids + slot.count);
    return;
  }
  const size_t first = out.size();
  merge(p, n, out);
  const size_t count = out.size() - first;
  if (count <= std::size(slot.ids)) {
    slot.hash = hash;
    slot.length = static_cast<uint8_t>(n);
    slot.count = static_cast<uint8_t>(count);
    std::memcpy(slot.bytes, p, n);
    std::copy(out.begin() + first, out.end(), slot.ids);
  }
}

void BpeEncoder::merge(const char* p, size_t n, std::vector<int32_t>& out) {
  if (const int32_t whole = tok_->vocab_.find(p, n); whole >= 0)
    out.push_back(whole);
  else if (n <= kShortPiece)
    merge_short(p, n, out);
  else
    merge_long(p, n, out);
}

// tiktoken's merge loop: parts start as single bytes; repeatedly the adjacent pair whose bytes
// form the lowest-ranked token (leftmost on ties) becomes one part, until no pair is a token. A
// part's token is the rank of the pair that formed it, so only candidate pairs are looked up.
void BpeEncoder::merge_short(const char* p, size_t n, std::vector<int32_t>& out) {
  const BpeVocab& v = tok_->vocab_;
  part_start_.resize(n + 1);
  part_rank_.resize(n);
  pair_rank_.resize(n);
  uint32_t* start = part_start_.data();  // part i is [start[i], start[i + 1])
  int32_t* rank = part_rank_.data();     // its token
  int32_t* pair = pair_rank_.data();     // parts i and i + 1 together, or kNoRank
  for (size_t i = 0; i < n; ++i) {
    start[i] = static_cast<uint32_t>(i);
    rank[i] = v.byte_rank[static_cast<unsigned char>(p[i])];
  }
  start[n] = static_cast<uint32_t>(n);
  size_t parts = n;
  auto rank_of = [&](size_t i) {  // parts i and i + 1 as one token
    if (i + 1 >= parts) return kNoRank;
    const int32_t r = v.find(p + start[i], start[i + 2] - start[i]);
    return r < 0 ? kNoRank : r;
  };
  for (size_t i = 0; i + 1 < parts; ++i) {
    const int32_t r = v.find_pair(p[i], p[i + 1]);
    pair[i] = r < 0 ? kNoRank : r;
  }
  pair[parts - 1] = kNoRank;
  for (;;) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < parts; ++i)
      if (pair[i] < pair[best]) best = i;
    if (pair[best] == kNoRank) break;
    rank[best] = pair[best];
    std::copy(start + best + 2, start + parts + 1, start + best + 1);
    std::copy(rank + best + 2, rank + parts, rank + best + 1);
    std::copy(pair + best + 2, pair + parts, pair + best + 1);
    --parts;
    pair[best] = rank_of(best);
    if (best > 0) pair[best - 1] = rank_of(best - 1);
  }
  out.insert(out.end(), rank, rank + parts);
}

// The same merges in the same order for long pieces, without the scan: parts form a linked
// list (by start byte), and a tournament tree over the start bytes holds each live pair as
// (rank << 32 | start), so that its root is the lowest rank, leftmost, and a merge updates three
// neighbouring leaves and their ancestors (branch-free minimums; a binary heap's lazy entries and
// sifts took half as long again).
void BpeEncoder::merge_long(const char* p, size_t n, std::vector<int32_t>& out) {
  const BpeVocab& v = tok_->vocab_;
  constexpr uint64_t kNone = ~uint64_t{0};
  const size_t leaves = std::bit_ceil(n);
  next_.resize(n + 1);
  prev_.resize(n + 1);
  part_rank_.resize(n + 1);
  tree_.assign(2 * leaves, kNone);
  uint32_t* next = next_.data();      // by a part's start byte: the next part's start
  uint32_t* prev = prev_.data();      // the previous part's start
  int32_t* rank = part_rank_.data();  // the part's token; kNoRank: merged into the one before
  uint64_t* tree = tree_.data();      // tree[1] is the root; the leaf of start s: tree[leaves + s]
  for (size_t i = 0; i <= n; ++i) {
    next[i] = static_cast<uint32_t>(i + 1);
    prev[i] = i ? static_cast<uint32_t>(i - 1) : 0;
    rank[i] = i < n ? v.byte_rank[static_cast<unsigned char>(p[i])] : kNoRank;
  }
  // Ranks are non-negative, so (rank << 32 | start) orders as (rank, start).
  const auto entry = [](int32_t r, uint32_t s) {
    return r < 0 ? kNone : uint64_t(uint32_t(r)) << 32 | s;
  };
  for (uint32_t s = 0; s + 1 < n; ++s) tree[leaves + s] = entry(v.find_pair(p[s], p[s + 1]), s);
  for (size_t i = leaves - 1; i >= 1; --i) tree[i] = std::min(tree[2 * i], tree[2 * i + 1]);
  auto refresh = [&](size_t lo, size_t hi) {  // after leaves lo..hi changed: their ancestors
    for (lo = (leaves + lo) >> 1, hi = (leaves + hi) >> 1; lo >= 1; lo >>= 1, hi >>= 1)
      for (size_t i = lo; i <= hi; ++i) tree[i] = std::min(tree[2 * i], tree[2 * i + 1]);
  };
  auto pair_at = [&](uint32_t s) {  // the part starting at s and the next as one token
    const uint32_t e = next[s];
    return e >= n ? kNone : entry(v.find(p + s, next[e] - s), s);
  };
  while (tree[1] != kNone) {
    const int32_t r = static_cast<int32_t>(tree[1] >> 32);
    const uint32_t s = static_cast<uint32_t>(tree[1]);
    const uint32_t gone = next[s];
    rank[gone] = kNoRank;
    rank[s] = r;
    next[s] = next[gone];
    if (next[s] <= n) prev[next[s]] = s;
    tree[leaves + gone] = kNone;
    tree[leaves + s] = pair_at(s);
    const uint32_t first = s > 0 ? prev[s] : s;
    if (s > 0) tree[leaves + first] = pair_at(first);
    refresh(first, gone);  // neighbouring leaves: their ancestors mostly shared
  }
  for (uint32_t s = 0; s < n; s = next[s]) out.push_back(rank[s]);
}

}  // namespace sambay
