#include "io/token_file.h"
#include "io/token_source.h"
#include "tests/io_test_util.h"

#include <fmt/format.h>

#include <filesystem>

namespace sambay {
namespace {

using testing::expect_error;
using testing::poke;
using testing::read_bytes;
using testing::ScratchDir;
using testing::write_bytes;

class TokenFileRoundTrip : public ::testing::TestWithParam<int> {};

TEST_P(TokenFileRoundTrip, WritesAndReadsBackTokensAndDocuments) {
  const int width = GetParam();
  ScratchDir dir;
  const std::string path = dir.file("t.tok");
  const int32_t eod = width == 2 ? 65535 : 199999;
  const int32_t big = width == 2 ? 65534 : 2147483647;
  // Documents: [3 1 eod] [eod] [big 0 eod] [5 6] (the last has no eod).
  std::vector<int32_t> tokens = {3, 1, eod, eod, big, 0, eod, 5, 6};
  write_token_file(path, tokens.data(), static_cast<int64_t>(tokens.size()), eod, width);
  TokenFile tf = open_token_file(path);
  EXPECT_EQ(tf.num_tokens, 9);
  EXPECT_EQ(tf.eod, eod);
  EXPECT_EQ(token_dtype_size(tf.dtype), width);
  EXPECT_EQ(tf.document_starts, (std::vector<int64_t>{0, 3, 4, 7}));
  EXPECT_EQ(document_start(tf, 4), 9);
  std::vector<int32_t> got(9);
  read_tokens(tf, 0, 9, got.data());
  EXPECT_EQ(got, tokens);
  read_tokens(tf, 4, 2, got.data());
  EXPECT_EQ(got[0], big);
  EXPECT_EQ(got[1], 0);
  EXPECT_EQ(read_bytes(path).size(), 32u + 9 * width);
  EXPECT_EQ(dir.listing(), std::vector<std::string>{"t.tok"});
}

INSTANTIATE_TEST_SUITE_P(Widths, TokenFileRoundTrip, ::testing::Values(2, 4),
                         [](const auto& info) { return fmt::format("bytes{}", info.param); });

TEST(TokenFile, DocumentBoundariesAtTheEnds) {
  ScratchDir dir;
  auto starts = [&](std::vector<int32_t> tokens) {
    write_token_file(dir.file("b"), tokens.data(), static_cast<int64_t>(tokens.size()), 9, 2);
    return open_token_file(dir.file("b")).document_starts;
  };
  EXPECT_EQ(starts({}), std::vector<int64_t>{});
  EXPECT_EQ(starts({9}), std::vector<int64_t>{0});
  EXPECT_EQ(starts({1, 9}), std::vector<int64_t>{0});
  EXPECT_EQ(starts({9, 1}), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(starts({9, 9, 9}), (std::vector<int64_t>{0, 1, 2}));
}

TEST(TokenFile, ManyDocumentsAcrossScanBlocks) {
  // More than one 2^20-token scan block, with an eod every 1000 tokens.
  ScratchDir dir;
  const int64_t n = (int64_t{1} << 20) * 2 + 12345;
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = i % 1000 == 999 ? 7 : 1;
  write_token_file(dir.file("m"), tokens.data(), n, 7, 2);
  TokenFile tf = open_token_file(dir.file("m"));
  ASSERT_EQ(static_cast<int64_t>(tf.document_starts.size()), (n + 999) / 1000);
  for (size_t d = 0; d < tf.document_starts.size(); ++d)
    ASSERT_EQ(tf.document_starts[d], static_cast<int64_t>(d) * 1000);
}

// A file truncated while it is mapped: reading past its new end is an error naming the file
// and its sizes, not a SIGBUS.
TEST(TokenFile, TruncatedWhileOpenIsAnErrorNamingTheFile) {
  ScratchDir dir;
  std::vector<int32_t> tokens(100000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i % 50000);
  const std::string path = dir.file("shrinking");
  write_token_file(path, tokens.data(), static_cast<int64_t>(tokens.size()), 0, 4);
  const TokenSource src = open_token_source(path);
  std::vector<int32_t> out(1000);
  read_tokens(src, 50000, 1000, out.data());
  EXPECT_EQ(out[0], 0);
  std::filesystem::resize_file(path, 4096);
  expect_error([&] { read_tokens(src, 50000, 1000, out.data()); },
               {path, "changed while it was being read", "4096 bytes now",
                fmt::format("{} when it was opened", 32 + 4 * tokens.size())});
  // The guard is scoped: the reads that still lie inside the file work, and so does the next
  // guarded read after the error.
  read_tokens(src, 0, 100, out.data());
  EXPECT_EQ(out[99], 99);
  expect_error([&] { read_tokens(src, 90000, 10, out.data()); }, {path, "changed"});
}

TEST(TokenFileWriter, RejectsTokensThatDoNotFit) {
  ScratchDir dir;
  std::vector<int32_t> tokens = {1, 70000};
  expect_error([&] { write_token_file(dir.file("x"), tokens.data(), 2, 0, 2); },
               {dir.file("x"), "token 1 = 70000"});
  tokens = {1, -3};
  expect_error([&] { write_token_file(dir.file("x"), tokens.data(), 2, 0, 4); }, {"token 1 = -3"});
  expect_error([&] { write_token_file(dir.file("x"), tokens.data(), 1, 0, 3); },
               {"bytes_per_token = 3"});
  expect_error([&] { write_token_file(dir.file("x"), tokens.data(), 1, 65536, 2); },
               {"eod token 65536"});
  EXPECT_TRUE(dir.listing().empty());
}

struct DamagedTokenFile : ::testing::Test {
  ScratchDir dir;
  std::string path;
  std::vector<uint8_t> bytes;
  void SetUp() override {
    path = dir.file("d.tok");
    std::vector<int32_t> tokens = {1, 2, 0, 3, 4, 5, 0};
    write_token_file(path, tokens.data(), 7, 0, 4);
    bytes = read_bytes(path);
    ASSERT_EQ(bytes.size(), 32u + 28);
  }
  void expect_open_error(std::initializer_list<std::string> parts) {
    write_bytes(path, bytes);
    expect_error([&] { open_token_file(path); }, parts);
  }
};

TEST_F(DamagedTokenFile, Missing) {
  expect_error([&] { open_token_file(dir.file("nope")); }, {dir.file("nope"), "cannot open"});
}

TEST_F(DamagedTokenFile, TruncatedHeader) {
  bytes.resize(31);
  expect_open_error({path, "31 bytes", "header"});
}

TEST_F(DamagedTokenFile, TruncatedTokens) {
  bytes.resize(58);
  expect_open_error({path, "58 bytes", "token_count = 7"});
}

TEST_F(DamagedTokenFile, BadMagic) {
  bytes[0] = 'X';
  expect_open_error({path, "magic"});
}

TEST_F(DamagedTokenFile, BadVersion) {
  poke<uint32_t>(bytes, 8, 3);
  expect_open_error({path, "version = 3"});
}

TEST_F(DamagedTokenFile, BadBytesPerToken) {
  poke<uint32_t>(bytes, 12, 8);
  expect_open_error({path, "bytes_per_token = 8"});
}

TEST_F(DamagedTokenFile, BitFlippedTokenCount) {
  for (int bit = 0; bit < 64; ++bit) {
    auto saved = bytes;
    bytes[16 + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    expect_open_error({path, "token_count"});
    bytes = saved;
  }
}

TEST_F(DamagedTokenFile, EodOutOfRange) {
  poke<int32_t>(bytes, 24, -1);
  expect_open_error({path, "eod_token = -1"});
  poke<uint32_t>(bytes, 12, 2);
  poke<uint64_t>(bytes, 16, 14);
  poke<int32_t>(bytes, 24, 65536);
  expect_open_error({path, "eod_token = 65536"});
}

TEST_F(DamagedTokenFile, ReservedNotZero) {
  poke<uint32_t>(bytes, 28, 1);
  expect_open_error({path, "reserved = 1"});
}

TEST_F(DamagedTokenFile, NegativeTokenIsAnErrorOnRead) {
  poke<int32_t>(bytes, 32 + 4 * 4, -9);
  write_bytes(path, bytes);
  TokenFile tf = open_token_file(path);
  std::vector<int32_t> out(7);
  expect_error([&] { read_tokens(tf, 0, 7, out.data()); }, {path, "token 4 = -9"});
  expect_error([&] { read_tokens(tf, 5, 3, out.data()); }, {path, "outside"});
}

TEST_F(DamagedTokenFile, EveryBitFlipAndTruncationIsSafe) {
  auto check = [&](const std::vector<uint8_t>& image) {
    write_bytes(path, image);
    try {
      TokenFile tf = open_token_file(path);
      std::vector<int32_t> all(tf.num_tokens);
      read_tokens(tf, 0, tf.num_tokens, all.data());
      for (size_t d = 0; d + 1 < tf.document_starts.size(); ++d)
        ASSERT_LT(tf.document_starts[d], tf.document_starts[d + 1]);
    } catch (const Error&) {
    }
  };
  for (size_t byte = 0; byte < bytes.size(); ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      auto damaged = bytes;
      damaged[byte] ^= static_cast<uint8_t>(1u << bit);
      check(damaged);
    }
  for (size_t n = 0; n < bytes.size(); ++n)
    check(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
}

}  // namespace
}  // namespace sambay
