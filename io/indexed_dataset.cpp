#include "io/indexed_dataset.h"

#include "core/check.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace sambay {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderBytes = 34;
// append_document writes its staged tokens once they reach this much.
constexpr size_t kWriteBytes = size_t{1} << 20;
constexpr size_t kVersionAt = 9, kDtypeAt = 17, kSequenceCountAt = 18, kDocumentCountAt = 26;

// Where the arrays start inside .idx; they follow the header without alignment.
size_t lengths_at() { return kHeaderBytes; }
size_t pointers_at(int64_t S) { return kHeaderBytes + 4 * static_cast<size_t>(S); }
size_t doc_indices_at(int64_t S) { return kHeaderBytes + 12 * static_cast<size_t>(S); }

int64_t sequence_length(const IndexedDataset& ds, int64_t i) {
  return load_le<int32_t>(ds.idx.data + lengths_at() + 4 * i);
}
int64_t sequence_pointer(const IndexedDataset& ds, int64_t i) {
  return load_le<int64_t>(ds.idx.data + pointers_at(ds.num_sequences) + 8 * i);
}
int64_t document_index(const IndexedDataset& ds, int64_t j) {
  return load_le<int64_t>(ds.idx.data + doc_indices_at(ds.num_sequences) + 8 * j);
}

void validate_header(IndexedDataset& ds) {
  const std::string& idx = ds.idx_path;
  const MappedFile& f = ds.idx;
  if (f.size < kHeaderBytes)
    fail("{}: file is {} bytes, shorter than the {}-byte header (truncated?)", idx, f.size,
         kHeaderBytes);
  if (std::memcmp(f.data, kMagic, sizeof(kMagic)) != 0) {
    std::string got;
    for (size_t i = 0; i < sizeof(kMagic); ++i) got += fmt::format("{:02x}", f.data[i]);
    fail("{}: magic is {} (hex), expected \"MMIDIDX\\0\\0\": not a Megatron indexed dataset", idx,
         got);
  }
  uint64_t version = load_le<uint64_t>(f.data + kVersionAt);
  if (version != kVersion) fail("{}: version = {}, expected {}", idx, version, kVersion);
  uint8_t code = f.data[kDtypeAt];
  if (!is_token_dtype_code(code))
    fail(
        "{}: dtype code = {} is not a token type (expected 1 uint8, 2 int8, 3 int16, 4 int32, "
        "5 int64 or 8 uint16)",
        idx, code);
  ds.dtype = static_cast<TokenDType>(code);

  uint64_t S = load_le<uint64_t>(f.data + kSequenceCountAt);
  uint64_t D = load_le<uint64_t>(f.data + kDocumentCountAt);
  if (D == 0)
    fail("{}: document_count = 0, expected at least 1 (document_indices begins with 0)", idx);
  // Bound the counts by the file size before multiplying, so a flipped bit cannot overflow.
  const uint64_t body = f.size - kHeaderBytes;
  if (S > body / 12 || D > body / 8)
    fail(
        "{}: sequence_count = {} and document_count = {} need more than the file's {} bytes "
        "(truncated, or a count is corrupt)",
        idx, S, D, f.size);
  const uint64_t need = kHeaderBytes + 12 * S + 8 * D;
  // The optional trailing modes[S] array (one byte per sequence) is allowed and ignored.
  if (f.size != need && f.size != need + S)
    fail(
        "{}: file is {} bytes but sequence_count = {} and document_count = {} need {} bytes "
        "({} with modes; truncated, or a count is corrupt)",
        idx, f.size, S, D, need, need + S);
  ds.num_sequences = static_cast<int64_t>(S);
  ds.num_documents = static_cast<int64_t>(D) - 1;
}

// Each pass finds the first offending element in parallel; the message is then built for it.
void validate_sequences(const IndexedDataset& ds) {
  const std::string& idx = ds.idx_path;
  const std::string& bin = ds.bin_path;
  const int64_t S = ds.num_sequences;
  const int64_t item = token_dtype_size(ds.dtype);
  const int64_t bin_bytes = static_cast<int64_t>(ds.bin.size);

  // Pass 1: every sequence lies inside .bin on its own.
  int64_t first_bad = S;
#pragma omp parallel for reduction(min : first_bad)
  for (int64_t i = 0; i < S; ++i) {
    int64_t len = sequence_length(ds, i), ptr = sequence_pointer(ds, i);
    bool ok = len >= 0 && ptr >= 0 && ptr <= bin_bytes && ptr % item == 0 &&
              len * item <= bin_bytes - ptr;
    if (!ok) first_bad = std::min(first_bad, i);
  }
  if (first_bad < S) {
    const int64_t i = first_bad, len = sequence_length(ds, i), ptr = sequence_pointer(ds, i);
    if (len < 0) fail("{}: sequence_lengths[{}] = {} is negative", idx, i, len);
    if (ptr < 0) fail("{}: sequence_pointers[{}] = {} is negative", idx, i, ptr);
    if (ptr > bin_bytes)
      fail("{}: sequence_pointers[{}] = {} points past the end of {} ({} bytes)", idx, i, ptr, bin,
           bin_bytes);
    if (ptr % item != 0)
      fail("{}: sequence_pointers[{}] = {} is not a multiple of the {}-byte {} token", idx, i, ptr,
           item, token_dtype_name(ds.dtype));
    fail(
        "{}: sequence_lengths[{}] = {} tokens at sequence_pointers[{}] = {} runs past the end "
        "of {} ({} bytes)",
        idx, i, len, i, ptr, bin, bin_bytes);
  }

  // Pass 2: sequences are back to back from byte 0 and fill .bin exactly.
  if (S > 0 && sequence_pointer(ds, 0) != 0)
    fail("{}: sequence_pointers[0] = {}, expected 0 (sequences are stored back to back in {})", idx,
         sequence_pointer(ds, 0), bin);
  first_bad = S;
#pragma omp parallel for reduction(min : first_bad)
  for (int64_t i = 0; i < S - 1; ++i) {
    if (sequence_pointer(ds, i + 1) != sequence_pointer(ds, i) + sequence_length(ds, i) * item)
      first_bad = std::min(first_bad, i);
  }
  if (first_bad < S) {
    const int64_t i = first_bad;
    fail(
        "{}: sequence_pointers[{}] = {}, expected {} = sequence_pointers[{}] + "
        "sequence_lengths[{}] * {} bytes (sequences are stored back to back in {})",
        idx, i + 1, sequence_pointer(ds, i + 1),
        sequence_pointer(ds, i) + sequence_length(ds, i) * item, i, i, item, bin);
  }
  const int64_t described =
      S == 0 ? 0 : sequence_pointer(ds, S - 1) + sequence_length(ds, S - 1) * item;
  if (described != bin_bytes)
    fail(
        "{}: file is {} bytes but {} describes {} bytes of tokens (truncated, or "
        "sequence_lengths/sequence_pointers are corrupt)",
        bin, bin_bytes, idx, described);
}

void validate_documents(const IndexedDataset& ds) {
  const std::string& idx = ds.idx_path;
  const int64_t S = ds.num_sequences, D = ds.num_documents + 1;
  if (document_index(ds, 0) != 0)
    fail("{}: document_indices[0] = {}, expected 0", idx, document_index(ds, 0));
  int64_t first_bad = D;
#pragma omp parallel for reduction(min : first_bad)
  for (int64_t j = 1; j < D; ++j) {
    int64_t v = document_index(ds, j);
    if (v < document_index(ds, j - 1) || v > S) first_bad = std::min(first_bad, j);
  }
  if (first_bad < D) {
    const int64_t j = first_bad, v = document_index(ds, j);
    if (v > S) fail("{}: document_indices[{}] = {} is past sequence_count = {}", idx, j, v, S);
    fail(
        "{}: document_indices[{}] = {} is smaller than document_indices[{}] = {} (must not "
        "decrease)",
        idx, j, v, j - 1, document_index(ds, j - 1));
  }
  if (document_index(ds, D - 1) != S)
    fail(
        "{}: document_indices[{}] = {}, expected sequence_count = {} (the last document must end "
        "at the last sequence)",
        idx, D - 1, document_index(ds, D - 1), S);
}

}  // namespace

IndexedDataset open_indexed_dataset(const std::string& prefix) {
  IndexedDataset ds;
  ds.idx_path = prefix + ".idx";
  ds.bin_path = prefix + ".bin";
  ds.idx = MappedFile(ds.idx_path);
  validate_header(ds);
  ds.bin = MappedFile(ds.bin_path);
  validate_sequences(ds);
  validate_documents(ds);
  ds.num_tokens = static_cast<int64_t>(ds.bin.size) / token_dtype_size(ds.dtype);
  return ds;
}

int64_t document_start(const IndexedDataset& ds, int64_t d) {
  SAMBAY_CHECK(d >= 0 && d <= ds.num_documents, "{}: document {} out of range [0, {}]", ds.idx_path,
               d, ds.num_documents);
  int64_t seq = document_index(ds, d);
  if (seq == ds.num_sequences) return ds.num_tokens;
  return sequence_pointer(ds, seq) / token_dtype_size(ds.dtype);
}

void read_tokens(const IndexedDataset& ds, int64_t offset, int64_t count, int32_t* out) {
  SAMBAY_CHECK(offset >= 0 && count >= 0 && count <= ds.num_tokens - offset,
               "{}: tokens [{}, {} + {}) outside the {} tokens", ds.bin_path, offset, offset, count,
               ds.num_tokens);
  const int64_t item = token_dtype_size(ds.dtype);
  decode_tokens(ds.bin.data + offset * item, ds.dtype, count, out, ds.bin_path, offset);
}

IndexedDatasetWriter begin_indexed_dataset(const std::string& prefix, TokenDType dtype) {
  SAMBAY_CHECK(is_token_dtype_code(static_cast<uint8_t>(dtype)), "{}: {} is not a token dtype",
               prefix, token_dtype_name(dtype));
  return IndexedDatasetWriter{prefix, dtype, AtomicFileWriter(prefix + ".bin"), {}, {}, 0};
}

void append_document(IndexedDatasetWriter& w, const int32_t* tokens, int64_t n) {
  SAMBAY_CHECK(n >= 0 && n <= std::numeric_limits<int32_t>::max(),
               "{}: document {} has {} tokens; a sequence holds at most 2^31 - 1", w.prefix,
               w.sequence_lengths.size(), n);
  const int64_t item = token_dtype_size(w.dtype);
  const size_t have = w.staging.size();
  w.staging.resize(have + static_cast<size_t>(n * item));
  encode_tokens(tokens, n, w.dtype, w.staging.data() + have,
                fmt::format("{}: document {}", w.prefix, w.sequence_lengths.size()));
  if (w.staging.size() >= kWriteBytes) {
    w.bin.write(w.staging.data(), w.staging.size());
    w.staging.clear();
  }
  w.sequence_lengths.push_back(static_cast<int32_t>(n));
  w.num_tokens += n;
}

void finish_indexed_dataset(IndexedDatasetWriter& w) {
  w.bin.write(w.staging.data(), w.staging.size());
  w.staging.clear();
  const uint64_t S = w.sequence_lengths.size(), D = S + 1;
  const int64_t item = token_dtype_size(w.dtype);
  std::vector<uint8_t> idx(kHeaderBytes + 12 * S + 8 * D);
  std::memcpy(idx.data(), kMagic, sizeof(kMagic));
  std::memcpy(idx.data() + kVersionAt, &kVersion, 8);
  idx[kDtypeAt] = static_cast<uint8_t>(w.dtype);
  std::memcpy(idx.data() + kSequenceCountAt, &S, 8);
  std::memcpy(idx.data() + kDocumentCountAt, &D, 8);
  // An empty dataset has no lengths (and a null data pointer, which memcpy must not get).
  if (S > 0) std::memcpy(idx.data() + lengths_at(), w.sequence_lengths.data(), 4 * S);
  int64_t pointer = 0;
  for (uint64_t i = 0; i < S; ++i) {
    std::memcpy(idx.data() + pointers_at(S) + 8 * i, &pointer, 8);
    pointer += w.sequence_lengths[i] * item;
  }
  // One sequence per document: document_indices = 0, 1, ..., S.
  for (uint64_t j = 0; j < D; ++j) {
    int64_t v = static_cast<int64_t>(j);
    std::memcpy(idx.data() + doc_indices_at(S) + 8 * j, &v, 8);
  }
  w.bin.commit();
  AtomicFileWriter idx_file(w.prefix + ".idx");
  idx_file.write(idx.data(), idx.size());
  idx_file.commit();
}

void write_indexed_dataset(const std::string& prefix,
                           const std::vector<std::vector<int32_t>>& documents, TokenDType dtype) {
  IndexedDatasetWriter w = begin_indexed_dataset(prefix, dtype);
  for (const auto& doc : documents)
    append_document(w, doc.data(), static_cast<int64_t>(doc.size()));
  finish_indexed_dataset(w);
}

}  // namespace sambay
