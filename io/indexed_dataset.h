// Megatron-LM indexed dataset: `prefix.idx` (the index) + `prefix.bin` (tokens back to back),
// both memory-mapped. Layout (little-endian; docs/formats.md has it as a table):
//   .idx: magic "MMIDIDX\0\0" (9 bytes), u64 version = 1, u8 dtype code, u64 sequence_count S,
//         u64 document_count D, int32 sequence_lengths[S], int64 sequence_pointers[S] (byte
//         offsets into .bin), int64 document_indices[D] (0, ..., S), optionally int8 modes[S].
//   Document d (of D - 1) is sequences [document_indices[d], document_indices[d + 1]).
// Opening validates all of it, and requires what Megatron's writer always produces: sequences
// stored back to back in order, filling .bin exactly. The .bin then is one token stream, and
// token offsets are positions in it.
#pragma once

#include "io/mapped_file.h"
#include "io/token_dtype.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

struct IndexedDataset {
  std::string idx_path, bin_path;
  MappedFile idx, bin;
  TokenDType dtype = TokenDType::u16;
  int64_t num_sequences = 0;  // S
  int64_t num_documents = 0;  // D - 1
  int64_t num_tokens = 0;     // .bin size / token size
};

// Opens and validates prefix.idx + prefix.bin. Every failure throws sambay::Error naming the file
// and the field, e.g. "d/x.idx: sequence_pointers[17] = 9999 points past the end of d/x.bin
// (4096 bytes)".
IndexedDataset open_indexed_dataset(const std::string& prefix);

// Token offset where document d starts; d == num_documents gives num_tokens.
int64_t document_start(const IndexedDataset& ds, int64_t d);

// tokens [offset, offset + count) of the .bin stream as int32 into out[count].
void read_tokens(const IndexedDataset& ds, int64_t offset, int64_t count, int32_t* out);

// Writes prefix.bin and prefix.idx one document (= one sequence) at a time, each file
// atomically. Memory: 4 bytes per document.
struct IndexedDatasetWriter {
  std::string prefix;
  TokenDType dtype;
  AtomicFileWriter bin;
  std::vector<int32_t> sequence_lengths;
  std::vector<uint8_t> staging;  // encoded tokens not yet written (a write per MiB, not per document)
  int64_t num_tokens = 0;
};

IndexedDatasetWriter begin_indexed_dataset(const std::string& prefix, TokenDType dtype);
// Throws naming the document and position if a token does not fit dtype.
void append_document(IndexedDatasetWriter& writer, const int32_t* tokens, int64_t n);
// Commits .bin, then writes and commits .idx.
void finish_indexed_dataset(IndexedDatasetWriter& writer);

// All at once: each inner vector is one document (and one sequence).
void write_indexed_dataset(const std::string& prefix,
                           const std::vector<std::vector<int32_t>>& documents, TokenDType dtype);

}  // namespace sambay
