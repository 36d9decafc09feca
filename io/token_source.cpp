#include "io/token_source.h"

#include "core/check.h"

#include <filesystem>
#include <fstream>

namespace sambay {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string first_bytes(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string bytes(n, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<size_t>(in.gcount()));
  return bytes;
}

TokenSource open_indexed(const std::string& path, const std::string& prefix) {
  TokenSource src;
  src.path = path;
  src.format = TokenFormat::indexed;
  src.indexed = open_indexed_dataset(prefix);
  return src;
}

}  // namespace

TokenSource open_token_source(const std::string& path) {
  namespace fs = std::filesystem;
  if (ends_with(path, ".idx") || ends_with(path, ".bin"))
    return open_indexed(path, path.substr(0, path.size() - 4));
  if (fs::is_regular_file(path)) {
    std::string magic = first_bytes(path, 9);
    if (magic.rfind("SAMBAYTK", 0) == 0) {
      TokenSource src;
      src.path = path;
      src.format = TokenFormat::flat;
      src.flat = open_token_file(path);
      return src;
    }
    if (magic == std::string("MMIDIDX\0\0", 9))
      fail("{}: is a Megatron index without the .idx extension; name it prefix.idx", path);
    fail("{}: neither a sambay token file (magic \"SAMBAYTK\") nor a Megatron indexed dataset",
         path);
  }
  if (fs::exists(path + ".idx")) return open_indexed(path, path);
  fail("{}: no such token file, and no {}.idx beside it", path, path);
}

const std::string& token_data_path(const TokenSource& src) {
  return src.format == TokenFormat::indexed ? src.indexed.bin_path : src.flat.path;
}

int64_t num_tokens(const TokenSource& src) {
  return src.format == TokenFormat::indexed ? src.indexed.num_tokens : src.flat.num_tokens;
}

int64_t num_documents(const TokenSource& src) {
  return src.format == TokenFormat::indexed ? src.indexed.num_documents
                                            : static_cast<int64_t>(src.flat.document_starts.size());
}

TokenDType token_dtype(const TokenSource& src) {
  return src.format == TokenFormat::indexed ? src.indexed.dtype : src.flat.dtype;
}

// The readers below touch mapped bytes (tokens, and the .idx arrays): a file truncated under
// a running job is then an error naming it (guard_mapped_reads), not a SIGBUS.
int64_t document_start(const TokenSource& src, int64_t d) {
  return guard_mapped_reads([&] {
    return src.format == TokenFormat::indexed ? document_start(src.indexed, d)
                                              : document_start(src.flat, d);
  });
}

int64_t document_of(const TokenSource& src, int64_t offset) {
  SAMBAY_CHECK(offset >= 0 && offset < num_tokens(src), "{}: token {} outside [0, {})", src.path,
               offset, num_tokens(src));
  // Largest d with document_start(d) <= offset. Document 0 starts at 0, so d >= 0 exists.
  int64_t lo = 0, hi = num_documents(src);  // invariant: start(lo) <= offset < start(hi)
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    if (document_start(src, mid) <= offset)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

void read_tokens(const TokenSource& src, int64_t offset, int64_t count, int32_t* out) {
  guard_mapped_reads([&] {
    if (src.format == TokenFormat::indexed)
      read_tokens(src.indexed, offset, count, out);
    else
      read_tokens(src.flat, offset, count, out);
  });
}

}  // namespace sambay
