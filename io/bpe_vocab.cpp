#include "io/bpe_vocab.h"

#include "core/check.h"
#include "io/crc32c.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace sambay {

namespace {

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with '=' padding; false on any other character or a bad length.
bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  size_t pad = 0;
  while (pad < 2 && in[in.size() - 1 - pad] == '=') ++pad;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < in.size() - pad; ++i) {
    const int v = base64_value(static_cast<unsigned char>(in[i]));
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return !out.empty();
}

}  // namespace

std::string read_maybe_gzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) fail("{}: cannot open: {}", path, std::strerror(errno ? errno : ENOENT));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string why = gzerror(f, &code);
      gzclose(f);
      fail("{}: cannot read: {}", path, why);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

int32_t BpeVocab::find(const char* bytes, size_t n) const {
  const uint64_t head = bpe_head(bytes, n);
  const uint64_t mask = slots.size() - 1;
  for (uint64_t i = bpe_hash(head, bytes, n) >> (64 - slot_bits);; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.length == 0) return -1;
    if (s.head == head && s.length == n &&
        (n <= 8 || std::memcmp(arena.data() + starts[s.rank] + 8, bytes + 8, n - 8) == 0))
      return s.rank;
  }
}

BpeVocab load_tiktoken_vocab(const std::string& path) {
  const std::string text = read_maybe_gzip_file(path);
  // Tokens as they come (decoded back to back), placed by rank afterwards.
  struct Entry {
    int64_t rank;
    uint32_t at, length;  // in `decoded`
  };
  std::vector<Entry> entries;
  std::string decoded, token;
  int64_t line_no = 0;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + at, end - at);
    at = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos)
      fail("{}:{}: expected 'BASE64 RANK', found no space", path, line_no);
    if (!base64_decode(line.substr(0, space), token))
      fail("{}:{}: '{}' is not base64 of a token", path, line_no, line.substr(0, space));
    const std::string_view rank_text = line.substr(space + 1);
    int64_t rank = -1;
    const auto [ptr, ec] =
        std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    if (ec != std::errc() || ptr != rank_text.data() + rank_text.size() || rank < 0 ||
        rank >= (int64_t{1} << 31) - 1)
      fail("{}:{}: rank '{}' is not an integer in [0, 2^31 - 1)", path, line_no, rank_text);
    entries.push_back({rank, static_cast<uint32_t>(decoded.size()), static_cast<uint32_t>(token.size())});
    decoded += token;
  }
  if (entries.empty()) fail("{}: no tokens (expected lines 'BASE64 RANK')", path);

  const int64_t n = static_cast<int64_t>(entries.size());
  std::vector<int64_t> index_of_rank(n, -1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = entries[i].rank;
    if (r >= n)
      fail("{}: rank {} but only {} tokens: ranks must be 0..{} with none missing", path, r, n,
           n - 1);
    if (index_of_rank[r] >= 0) fail("{}: rank {} is given twice", path, r);
    index_of_rank[r] = i;
  }

  BpeVocab v;
  v.path = path;
  v.arena.reserve(decoded.size());
  v.starts.reserve(n + 1);
  v.starts.push_back(0);
  for (int64_t r = 0; r < n; ++r) {
    const Entry& e = entries[index_of_rank[r]];
    v.arena.append(decoded, e.at, e.length);
    v.starts.push_back(static_cast<uint32_t>(v.arena.size()));
    v.fingerprint = crc32c(&e.length, sizeof e.length, v.fingerprint);
    v.fingerprint = crc32c(decoded.data() + e.at, e.length, v.fingerprint);
  }
  // Tokens inserted in rank order; a probe that meets the same bytes names the earlier rank.
  const uint64_t capacity = std::bit_ceil(static_cast<uint64_t>(2 * n));
  v.slots.assign(capacity, BpeVocab::Slot{});
  v.slot_bits = std::countr_zero(capacity);
  v.pair_rank.assign(256 * 256, -1);
  std::fill(std::begin(v.byte_rank), std::end(v.byte_rank), -1);
  for (int32_t r = 0; r < n; ++r) {
    const std::string_view t = v.token(r);
    if (t.empty()) fail("{}: the token of rank {} is empty", path, r);
    const uint64_t head = bpe_head(t.data(), t.size());
    uint64_t i = bpe_hash(head, t.data(), t.size()) >> (64 - v.slot_bits);
    for (; v.slots[i].length != 0; i = (i + 1) & (capacity - 1)) {
      const BpeVocab::Slot& s = v.slots[i];
      if (s.head == head && s.length == t.size() && v.token(s.rank) == t)
        fail("{}: the token of rank {} is also the token of rank {}", path, r, s.rank);
    }
    v.slots[i] = {head, static_cast<uint32_t>(t.size()), r};
    if (t.size() == 1) v.byte_rank[static_cast<unsigned char>(t[0])] = r;
    if (t.size() == 2)
      v.pair_rank[static_cast<unsigned char>(t[0]) * 256 + static_cast<unsigned char>(t[1])] = r;
  }
  for (int b = 0; b < 256; ++b)
    if (v.byte_rank[b] < 0)
      fail("{}: the single byte 0x{:02x} is not a token, so some text could not be encoded",
           path, b);
  return v;
}

}  // namespace sambay
