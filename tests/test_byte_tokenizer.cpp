#include "io/byte_tokenizer.h"
#include "tests/io_test_util.h"

namespace sambay {
namespace {

TEST(ByteTokenizer, EveryByteRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::vector<int32_t> tokens = byte_encode(all);
  ASSERT_EQ(tokens.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(tokens[b], b);  // bytes >= 128 are not sign-extended
  EXPECT_EQ(byte_decode(tokens), all);
}

TEST(ByteTokenizer, Utf8TextIsItsBytes) {
  const std::string text = "Grüße, 世界\n";
  std::vector<int32_t> tokens = byte_encode(text);
  EXPECT_EQ(tokens.size(), text.size());
  EXPECT_EQ(tokens[0], 'G');
  EXPECT_EQ(tokens[2], 0xC3);
  EXPECT_EQ(byte_decode(tokens), text);
  EXPECT_TRUE(byte_encode("").empty());
}

TEST(ByteTokenizer, EndOfDocumentIsDroppedOnDecode) {
  EXPECT_EQ(kByteEod, 256);
  EXPECT_EQ(kByteVocab, 257);
  std::vector<int32_t> tokens = {'a', kByteEod, 'b', kByteEod};
  EXPECT_EQ(byte_decode(tokens), "ab");
}

TEST(ByteTokenizer, OutOfRangeTokensAreNamed) {
  std::vector<int32_t> tokens = {'a', 'b', 257};
  testing::expect_error([&] { byte_decode(tokens); }, {"token 257", "position 2"});
  tokens = {-1};
  testing::expect_error([&] { byte_decode(tokens); }, {"token -1", "position 0"});
}

}  // namespace
}  // namespace sambay
