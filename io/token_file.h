// The flat token file: a 32-byte header, then the tokens back to back; documents are separated
// by (end with) the end-of-document token named in the header.
//   bytes 0..7   magic "SAMBAYTK"
//   bytes 8..11  u32 version = 1
//   bytes 12..15 u32 bytes per token: 2 (uint16) or 4 (int32)
//   bytes 16..23 u64 token count
//   bytes 24..27 i32 end-of-document token id
//   bytes 28..31 u32 reserved, 0
// Little-endian. Document d ends with the d-th eod token; tokens after the last eod, if any, are
// one more document. Opening scans the tokens once for the eods, so for very large corpora the
// indexed dataset (whose index is precomputed) is the better format.
#pragma once

#include "io/mapped_file.h"
#include "io/token_dtype.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

constexpr size_t kTokenFileHeaderBytes = 32;

struct TokenFile {
  std::string path;
  MappedFile file;
  TokenDType dtype = TokenDType::u16;  // u16 or i32
  int64_t num_tokens = 0;
  int32_t eod = 0;
  std::vector<int64_t> document_starts;  // token offset of each document, increasing
};

// Opens and validates; every failure throws sambay::Error naming the file and the field.
TokenFile open_token_file(const std::string& path);

// Token offset where document d starts; d == number of documents gives num_tokens.
int64_t document_start(const TokenFile& tf, int64_t d);

// tokens [offset, offset + count) as int32 into out[count].
void read_tokens(const TokenFile& tf, int64_t offset, int64_t count, int32_t* out);

// Writes tokens[n] (documents already separated by eod) atomically. bytes_per_token is 2 or 4;
// throws naming the position of a token that does not fit.
void write_token_file(const std::string& path, const int32_t* tokens, int64_t n, int32_t eod,
                      int bytes_per_token);

}  // namespace sambay
