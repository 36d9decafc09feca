// The one view of token data that the sampler and tools use, whichever file holds it: a token
// stream [0, num_tokens) cut into documents [document_start(d), document_start(d + 1)).
#pragma once

#include "io/indexed_dataset.h"
#include "io/token_file.h"

#include <cstdint>
#include <string>

namespace sambay {

enum class TokenFormat { indexed, flat };

struct TokenSource {
  std::string path;  // as the user gave it
  TokenFormat format = TokenFormat::flat;
  IndexedDataset indexed;  // when format == indexed
  TokenFile flat;          // when format == flat
};

// Detects the format: "x.idx", "x.bin" or a prefix "x" with x.idx beside it is a Megatron indexed
// dataset; a file starting with "SAMBAYTK" is a flat token file. Throws naming the path otherwise.
TokenSource open_token_source(const std::string& path);

// The file that holds the tokens (the .bin of an indexed dataset), for messages.
const std::string& token_data_path(const TokenSource& src);
int64_t num_tokens(const TokenSource& src);
int64_t num_documents(const TokenSource& src);
TokenDType token_dtype(const TokenSource& src);
// Token offset where document d starts; d == num_documents gives num_tokens. Documents may be
// empty (then they start where the next one does).
int64_t document_start(const TokenSource& src, int64_t d);
// The document that holds token `offset` (the last one starting at or before it, so never an
// empty one): a binary search over document starts.
int64_t document_of(const TokenSource& src, int64_t offset);
// tokens [offset, offset + count) as int32 into out[count]. Thread-safe.
void read_tokens(const TokenSource& src, int64_t offset, int64_t count, int32_t* out);

}  // namespace sambay
