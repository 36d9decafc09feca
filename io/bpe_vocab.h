// A byte-level BPE vocabulary in tiktoken's file format: one line per token, "BASE64 RANK", the
// base64 of the token's bytes and its rank. A rank is at once the token id and the merge
// priority (lower merges first). Plain or gzip-compressed files read the same.
//
// Lookups by bytes go through an open-addressing table, because the encoder asks it about every
// candidate merge (about three times per input byte). A slot holds a token's first 8 bytes and
// length, so that a probe compares in registers and only tokens longer than 8 bytes read the
// token bytes; at most half full: 8 MiB for o200k's 199,998 tokens. Two-byte tokens, asked for
// most, also have a direct table (256 KiB).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace sambay {

struct BpeVocab {
  std::string path;
  std::string arena;             // every token's bytes, in rank order
  std::vector<uint32_t> starts;  // token r is arena[starts[r], starts[r + 1])
  struct Slot {
    uint64_t head = 0;  // the first 8 bytes (fewer: zero-padded), little-endian
    uint32_t length = 0;  // 0: free
    int32_t rank = -1;
  };
  std::vector<Slot> slots;
  int slot_bits = 0;             // slots.size() == 2^slot_bits
  int32_t byte_rank[256] = {};   // the rank of each single byte (all 256 must be tokens)
  std::vector<int32_t> pair_rank;  // [b0 * 256 + b1]: the two-byte token's rank, or -1
  // CRC-32C over (length, bytes) of every token in rank order: names a known vocabulary
  // whatever its file's compression or line endings.
  uint32_t fingerprint = 0;

  int32_t size() const { return static_cast<int32_t>(starts.size()) - 1; }
  std::string_view token(int32_t rank) const {
    return std::string_view(arena).substr(starts[rank], starts[rank + 1] - starts[rank]);
  }
  // The rank of the token with exactly these bytes, or -1.
  int32_t find(const char* bytes, size_t n) const;
  int32_t find_pair(char b0, char b1) const {
    return pair_rank[static_cast<unsigned char>(b0) * 256 + static_cast<unsigned char>(b1)];
  }
};

// The first min(n, 8) bytes as a little-endian word, zero-padded, without reading past p + n:
// overlapping loads put every byte at its own position.
inline uint64_t bpe_head(const char* p, size_t n) {
  if (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    return w;
  }
  if (n >= 4) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return lo | uint64_t{hi} << (8 * (n - 4));
  }
  if (n == 0) return 0;
  const auto b = [&](size_t i) { return uint64_t{static_cast<unsigned char>(p[i])} << (8 * i); };
  return b(0) | b(n / 2) | b(n - 1);
}

// Multiply-xorshift over the head (bpe_head(p, n)), the length and the later 8-byte words (the
// last one overlapping). Tables index by the top bits.
inline uint64_t bpe_hash(uint64_t head, const char* p, size_t n) {
  uint64_t h = (head ^ (n * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
  h ^= h >> 31;
  for (size_t at = 8; at < n; at += 8) {
    uint64_t w;
    std::memcpy(&w, p + std::min(at, n - 8), 8);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  return h * 0xD6E8FEB86659FD93ull;
}

// Reads a .tiktoken file (gzip or plain). Ranks must be 0..n-1, each once; every single byte must
// be a token (or some text could not be encoded). Errors name the file and the line.
BpeVocab load_tiktoken_vocab(const std::string& path);

// The whole file, gunzipped when it is gzip (zlib reads plain files unchanged). Throws naming
// the path.
std::string read_maybe_gzip_file(const std::string& path);

}  // namespace sambay
