// How tokens are stored on disk. The codes are Megatron-LM's indexed-dataset dtype codes; the
// flat token file uses the uint16 and int32 ones. In memory every token is an int32.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>

namespace sambay {

static_assert(std::endian::native == std::endian::little,
              "token files are little-endian and read in place");

enum class TokenDType : uint8_t {
  u8 = 1,
  i8 = 2,
  i16 = 3,
  i32 = 4,
  i64 = 5,
  f64 = 6,  // a Megatron code, but not a token type: rejected on open
  f32 = 7,  // likewise
  u16 = 8,
};

// True for the codes that hold token ids (all but 6 and 7 and unknown codes).
bool is_token_dtype_code(uint8_t code);
const char* token_dtype_name(TokenDType dtype);  // "uint16", ...
int64_t token_dtype_size(TokenDType dtype);      // bytes per token
int64_t max_token_of(TokenDType dtype);          // largest id it can hold as an int32

// Megatron's choice: uint16 below a vocabulary of 65500 tokens, int32 from there on.
TokenDType token_dtype_for_vocab(int64_t vocab);

// Converts `count` tokens stored as dtype at `bytes` to int32. Throws naming `path` and the
// token's index (first_index + i) when a stored id is negative or does not fit an int32.
void decode_tokens(const uint8_t* bytes, TokenDType dtype, int64_t count, int32_t* out,
                   const std::string& path, int64_t first_index);

// The inverse, into `count * token_dtype_size(dtype)` bytes. Throws naming `what` (e.g.
// "document 3") and the position when a token is negative or too large for dtype.
void encode_tokens(const int32_t* tokens, int64_t count, TokenDType dtype, uint8_t* out,
                   const std::string& what);

// Little-endian scalar at any byte offset (index arrays are not naturally aligned).
template <typename T>
inline T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace sambay
