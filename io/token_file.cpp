#include "io/token_file.h"

#include "core/check.h"

#include <cstring>

namespace sambay {

namespace {

constexpr char kMagic[8] = {'S', 'A', 'M', 'B', 'A', 'Y', 'T', 'K'};
constexpr uint32_t kVersion = 1;
constexpr size_t kVersionAt = 8, kBytesPerTokenAt = 12, kCountAt = 16, kEodAt = 24,
                 kReservedAt = 28;

TokenDType dtype_for_width(uint32_t bytes_per_token) {
  return bytes_per_token == 2 ? TokenDType::u16 : TokenDType::i32;
}

// Documents end at eod tokens. Two parallel passes over the mapped tokens: count eods per block,
// then write each block's document starts at its offset.
std::vector<int64_t> find_document_starts(const TokenFile& tf) {
  const int64_t n = tf.num_tokens;
  if (n == 0) return {};
  const int64_t item = token_dtype_size(tf.dtype);
  const uint8_t* base = tf.file.data + kTokenFileHeaderBytes;
  auto is_eod = [&](int64_t i) {
    return item == 2 ? load_le<uint16_t>(base + 2 * i) == static_cast<uint32_t>(tf.eod)
                     : load_le<int32_t>(base + 4 * i) == tf.eod;
  };
  const int64_t block = int64_t{1} << 20;
  const int64_t num_blocks = (n + block - 1) / block;
  std::vector<int64_t> block_count(num_blocks + 1, 0);
  // A document starts at 0 and after every eod that is not the last token.
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < num_blocks; ++b) {
    int64_t count = 0;
    for (int64_t i = b * block; i < std::min(n - 1, (b + 1) * block); ++i) count += is_eod(i);
    block_count[b + 1] = count;
  }
  for (int64_t b = 0; b < num_blocks; ++b) block_count[b + 1] += block_count[b];
  std::vector<int64_t> starts(1 + block_count[num_blocks]);
  starts[0] = 0;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < num_blocks; ++b) {
    int64_t at = 1 + block_count[b];
    for (int64_t i = b * block; i < std::min(n - 1, (b + 1) * block); ++i)
      if (is_eod(i)) starts[at++] = i + 1;
  }
  return starts;
}

}  // namespace

TokenFile open_token_file(const std::string& path) {
  TokenFile tf;
  tf.path = path;
  tf.file = MappedFile(path);
  const MappedFile& f = tf.file;
  if (f.size < kTokenFileHeaderBytes)
    fail("{}: file is {} bytes, shorter than the {}-byte header (truncated?)", path, f.size,
         kTokenFileHeaderBytes);
  if (std::memcmp(f.data, kMagic, sizeof(kMagic)) != 0)
    fail("{}: magic is \"{}\", expected \"SAMBAYTK\": not a sambay token file", path,
         std::string(reinterpret_cast<const char*>(f.data), sizeof(kMagic)));
  uint32_t version = load_le<uint32_t>(f.data + kVersionAt);
  if (version != kVersion) fail("{}: version = {}, expected {}", path, version, kVersion);
  uint32_t width = load_le<uint32_t>(f.data + kBytesPerTokenAt);
  if (width != 2 && width != 4) fail("{}: bytes_per_token = {}, expected 2 or 4", path, width);
  tf.dtype = dtype_for_width(width);
  uint64_t count = load_le<uint64_t>(f.data + kCountAt);
  const uint64_t body = f.size - kTokenFileHeaderBytes;
  if (count > body / width || count * width != body)
    fail(
        "{}: file is {} bytes but token_count = {} at {} bytes per token needs {} + {} bytes "
        "(truncated, or token_count is corrupt)",
        path, f.size, count, width, kTokenFileHeaderBytes,
        count > body / width ? std::string("more than the file") : std::to_string(count * width));
  tf.num_tokens = static_cast<int64_t>(count);
  tf.eod = load_le<int32_t>(f.data + kEodAt);
  if (tf.eod < 0 || tf.eod > max_token_of(tf.dtype))
    fail("{}: eod_token = {} does not fit {}-byte tokens", path, tf.eod, width);
  uint32_t reserved = load_le<uint32_t>(f.data + kReservedAt);
  if (reserved != 0) fail("{}: reserved = {}, expected 0", path, reserved);
  tf.document_starts = find_document_starts(tf);
  return tf;
}

int64_t document_start(const TokenFile& tf, int64_t d) {
  const int64_t num_documents = static_cast<int64_t>(tf.document_starts.size());
  SAMBAY_CHECK(d >= 0 && d <= num_documents, "{}: document {} out of range [0, {}]", tf.path, d,
               num_documents);
  return d == num_documents ? tf.num_tokens : tf.document_starts[d];
}

void read_tokens(const TokenFile& tf, int64_t offset, int64_t count, int32_t* out) {
  SAMBAY_CHECK(offset >= 0 && count >= 0 && count <= tf.num_tokens - offset,
               "{}: tokens [{}, {} + {}) outside the {} tokens", tf.path, offset, offset, count,
               tf.num_tokens);
  const int64_t item = token_dtype_size(tf.dtype);
  decode_tokens(tf.file.data + kTokenFileHeaderBytes + offset * item, tf.dtype, count, out, tf.path,
                offset);
}

void write_token_file(const std::string& path, const int32_t* tokens, int64_t n, int32_t eod,
                      int bytes_per_token) {
  SAMBAY_CHECK(bytes_per_token == 2 || bytes_per_token == 4,
               "{}: bytes_per_token = {}, expected 2 or 4", path, bytes_per_token);
  SAMBAY_CHECK(n >= 0, "{}: negative token count {}", path, n);
  const TokenDType dtype = dtype_for_width(static_cast<uint32_t>(bytes_per_token));
  SAMBAY_CHECK(eod >= 0 && eod <= max_token_of(dtype), "{}: eod token {} does not fit {}", path,
               eod, token_dtype_name(dtype));
  uint8_t header[kTokenFileHeaderBytes] = {};
  const uint32_t width = static_cast<uint32_t>(bytes_per_token);
  const uint64_t count = static_cast<uint64_t>(n);
  std::memcpy(header, kMagic, sizeof(kMagic));
  std::memcpy(header + kVersionAt, &kVersion, 4);
  std::memcpy(header + kBytesPerTokenAt, &width, 4);
  std::memcpy(header + kCountAt, &count, 8);
  std::memcpy(header + kEodAt, &eod, 4);
  AtomicFileWriter out(path);
  out.write(header, sizeof(header));
  // Encode in blocks so a huge write needs only a small buffer.
  const int64_t block = int64_t{1} << 20;
  std::vector<uint8_t> bytes;
  for (int64_t at = 0; at < n; at += block) {
    const int64_t m = std::min(block, n - at);
    bytes.resize(static_cast<size_t>(m * bytes_per_token));
    encode_tokens(tokens + at, m, dtype, bytes.data(), fmt::format("{}: tokens from {}", path, at));
    out.write(bytes.data(), bytes.size());
  }
  out.commit();
}

}  // namespace sambay
