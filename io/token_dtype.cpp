#include "io/token_dtype.h"

#include "core/check.h"

#include <limits>

namespace sambay {

bool is_token_dtype_code(uint8_t code) {
  switch (code) {
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 8: return true;
    default: return false;
  }
}

const char* token_dtype_name(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::u8: return "uint8";
    case TokenDType::i8: return "int8";
    case TokenDType::i16: return "int16";
    case TokenDType::i32: return "int32";
    case TokenDType::i64: return "int64";
    case TokenDType::f64: return "float64";
    case TokenDType::f32: return "float32";
    case TokenDType::u16: return "uint16";
  }
  return "unknown";
}

int64_t token_dtype_size(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::u8:
    case TokenDType::i8: return 1;
    case TokenDType::i16:
    case TokenDType::u16: return 2;
    case TokenDType::i32:
    case TokenDType::f32: return 4;
    case TokenDType::i64:
    case TokenDType::f64: return 8;
  }
  fail("unknown token dtype code {}", static_cast<int>(dtype));
}

int64_t max_token_of(TokenDType dtype) {
  switch (dtype) {
    case TokenDType::u8: return 255;
    case TokenDType::i8: return 127;
    case TokenDType::i16: return 32767;
    case TokenDType::u16: return 65535;
    case TokenDType::i32:
    case TokenDType::i64: return std::numeric_limits<int32_t>::max();
    default: fail("{} is not a token dtype", token_dtype_name(dtype));
  }
}

TokenDType token_dtype_for_vocab(int64_t vocab) {
  SAMBAY_CHECK(vocab > 0 && vocab <= int64_t{1} << 31, "vocabulary size {} out of range", vocab);
  return vocab < 65500 ? TokenDType::u16 : TokenDType::i32;
}

namespace {

template <typename Stored>
void decode_as(const uint8_t* bytes, int64_t count, int32_t* out, const std::string& path,
               int64_t first_index) {
  for (int64_t i = 0; i < count; ++i) {
    Stored v = load_le<Stored>(bytes + i * static_cast<int64_t>(sizeof(Stored)));
    if constexpr (std::numeric_limits<Stored>::is_signed) {
      if (v < 0 || static_cast<int64_t>(v) > std::numeric_limits<int32_t>::max())
        fail("{}: token {} = {} is not a valid token id (must be in [0, 2^31))", path,
             first_index + i, static_cast<int64_t>(v));
    }
    out[i] = static_cast<int32_t>(v);
  }
}

template <typename Stored>
void encode_as(const int32_t* tokens, int64_t count, uint8_t* out, int64_t max_token,
               const std::string& what) {
  for (int64_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] > max_token)
      fail("{}: token {} = {} does not fit the storage type (allowed 0..{})", what, i, tokens[i],
           max_token);
    Stored v = static_cast<Stored>(tokens[i]);
    std::memcpy(out + i * static_cast<int64_t>(sizeof(Stored)), &v, sizeof(Stored));
  }
}

}  // namespace

void decode_tokens(const uint8_t* bytes, TokenDType dtype, int64_t count, int32_t* out,
                   const std::string& path, int64_t first_index) {
  switch (dtype) {
    case TokenDType::u8: return decode_as<uint8_t>(bytes, count, out, path, first_index);
    case TokenDType::i8: return decode_as<int8_t>(bytes, count, out, path, first_index);
    case TokenDType::i16: return decode_as<int16_t>(bytes, count, out, path, first_index);
    case TokenDType::u16: return decode_as<uint16_t>(bytes, count, out, path, first_index);
    case TokenDType::i32: return decode_as<int32_t>(bytes, count, out, path, first_index);
    case TokenDType::i64: return decode_as<int64_t>(bytes, count, out, path, first_index);
    default: fail("{}: {} is not a token dtype", path, token_dtype_name(dtype));
  }
}

void encode_tokens(const int32_t* tokens, int64_t count, TokenDType dtype, uint8_t* out,
                   const std::string& what) {
  const int64_t max_token = max_token_of(dtype);
  switch (dtype) {
    case TokenDType::u8: return encode_as<uint8_t>(tokens, count, out, max_token, what);
    case TokenDType::i8: return encode_as<int8_t>(tokens, count, out, max_token, what);
    case TokenDType::i16: return encode_as<int16_t>(tokens, count, out, max_token, what);
    case TokenDType::u16: return encode_as<uint16_t>(tokens, count, out, max_token, what);
    case TokenDType::i32: return encode_as<int32_t>(tokens, count, out, max_token, what);
    case TokenDType::i64: return encode_as<int64_t>(tokens, count, out, max_token, what);
    default: fail("{}: {} is not a token dtype", what, token_dtype_name(dtype));
  }
}

}  // namespace sambay
