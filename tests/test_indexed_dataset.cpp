#include "io/indexed_dataset.h"
#include "io/token_source.h"
#include "tests/io_test_util.h"

#include "core/philox.h"

#include <fmt/format.h>

#include <filesystem>
#include <limits>

namespace sambay {

// Readable parameter values in test output.
void PrintTo(TokenDType dtype, std::ostream* os) { *os << token_dtype_name(dtype); }

namespace {

using testing::expect_error;
using testing::poke;
using testing::read_bytes;
using testing::ScratchDir;
using testing::write_bytes;

// Documents with random lengths (one of them empty) and tokens in [0, max_token].
std::vector<std::vector<int32_t>> random_documents(int64_t num_docs, int64_t max_token,
                                                   uint64_t seed) {
  std::vector<std::vector<int32_t>> docs(num_docs);
  for (int64_t d = 0; d < num_docs; ++d) {
    int64_t len = d == 1 ? 0 : 1 + static_cast<int64_t>(philox_below(seed, 1, d, 40));
    for (int64_t i = 0; i < len; ++i)
      docs[d].push_back(static_cast<int32_t>(
          philox_below(seed, 2, d * 1000 + i, static_cast<uint64_t>(max_token) + 1)));
  }
  docs[0].push_back(static_cast<int32_t>(max_token));  // the extreme value round-trips too
  return docs;
}

// A Megatron index image from its fields (version 1).
std::vector<uint8_t> index_image(uint8_t dtype_code, const std::vector<int32_t>& lengths,
                                 const std::vector<int64_t>& pointers,
                                 const std::vector<int64_t>& doc_indices, bool with_modes) {
  std::vector<uint8_t> b(34 + 12 * lengths.size() + 8 * doc_indices.size() +
                         (with_modes ? lengths.size() : 0));
  std::memcpy(b.data(), "MMIDIDX\0\0", 9);
  poke<uint64_t>(b, 9, 1);
  b[17] = dtype_code;
  poke<uint64_t>(b, 18, lengths.size());
  poke<uint64_t>(b, 26, doc_indices.size());
  size_t at = 34;
  for (int32_t v : lengths) poke(b, at, v), at += 4;
  for (int64_t v : pointers) poke(b, at, v), at += 8;
  for (int64_t v : doc_indices) poke(b, at, v), at += 8;
  return b;
}

class IndexedDatasetRoundTrip : public ::testing::TestWithParam<TokenDType> {};

TEST_P(IndexedDatasetRoundTrip, WritesAndReadsBackEveryToken) {
  const TokenDType dtype = GetParam();
  ScratchDir dir;
  const std::string prefix = dir.file("data");
  auto docs = random_documents(9, max_token_of(dtype), 7);
  write_indexed_dataset(prefix, docs, dtype);

  IndexedDataset ds = open_indexed_dataset(prefix);
  EXPECT_EQ(ds.dtype, dtype);
  EXPECT_EQ(ds.num_documents, 9);
  EXPECT_EQ(ds.num_sequences, 9);
  int64_t at = 0;
  for (int64_t d = 0; d < 9; ++d) {
    EXPECT_EQ(document_start(ds, d), at);
    std::vector<int32_t> got(docs[d].size());
    read_tokens(ds, at, static_cast<int64_t>(got.size()), got.data());
    EXPECT_EQ(got, docs[d]) << "document " << d;
    at += static_cast<int64_t>(docs[d].size());
  }
  EXPECT_EQ(ds.num_tokens, at);
  EXPECT_EQ(document_start(ds, 9), at);
  // Only the two finished files remain: no temporaries.
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"data.bin", "data.idx"}));
}

INSTANTIATE_TEST_SUITE_P(Dtypes, IndexedDatasetRoundTrip,
                         ::testing::Values(TokenDType::u8, TokenDType::i8, TokenDType::i16,
                                           TokenDType::u16, TokenDType::i32, TokenDType::i64),
                         [](const auto& info) {
                           return std::string(token_dtype_name(info.param));
                         });

TEST(IndexedDataset, ReadsDocumentsOfSeveralSequencesAndTheModesArray) {
  // Megatron without --split-sentences off: document 0 = sequences 0..1, document 1 = sequence 2,
  // document 2 = no sequences (empty), document 3 = sequence 3.
  ScratchDir dir;
  const std::string prefix = dir.file("multi");
  std::vector<uint16_t> tokens = {10, 11, 12, 20, 21, 30, 40, 41};
  std::vector<uint8_t> bin(tokens.size() * 2);
  std::memcpy(bin.data(), tokens.data(), bin.size());
  write_bytes(prefix + ".bin", bin);
  write_bytes(prefix + ".idx", index_image(8, {3, 2, 1, 2}, {0, 6, 10, 12}, {0, 2, 3, 3, 4}, true));
  IndexedDataset ds = open_indexed_dataset(prefix);
  EXPECT_EQ(ds.num_sequences, 4);
  EXPECT_EQ(ds.num_documents, 4);
  EXPECT_EQ(document_start(ds, 0), 0);
  EXPECT_EQ(document_start(ds, 1), 5);
  EXPECT_EQ(document_start(ds, 2), 6);
  EXPECT_EQ(document_start(ds, 3), 6);
  EXPECT_EQ(document_start(ds, 4), 8);
  TokenSource src = open_token_source(prefix);
  // The empty document 2 holds no token: token 6 belongs to document 3.
  std::vector<int64_t> expected_doc = {0, 0, 0, 0, 0, 1, 3, 3};
  for (int64_t t = 0; t < 8; ++t) EXPECT_EQ(document_of(src, t), expected_doc[t]) << t;
  std::vector<int32_t> got(8);
  read_tokens(src, 0, 8, got.data());
  EXPECT_EQ(got, std::vector<int32_t>(tokens.begin(), tokens.end()));
}

// The index truncated while training reads it: looking a document up past its new end is an
// error naming the .idx file, not a SIGBUS.
TEST(IndexedDataset, AnIndexTruncatedWhileOpenIsAnErrorNamingIt) {
  ScratchDir dir;
  std::vector<std::vector<int32_t>> docs(5000, std::vector<int32_t>{1, 2, 3});
  const std::string prefix = dir.file("ds");
  write_indexed_dataset(prefix, docs, TokenDType::u16);
  const TokenSource src = open_token_source(prefix);
  EXPECT_EQ(document_start(src, 4000), 12000);
  std::filesystem::resize_file(prefix + ".idx", 4096);
  expect_error([&] { document_start(src, 4000); },
               {prefix + ".idx", "changed while it was being read", "4096 bytes now"});
}

TEST(IndexedDataset, EmptyDatasetOpens) {
  ScratchDir dir;
  write_indexed_dataset(dir.file("e"), {}, TokenDType::u16);
  IndexedDataset ds = open_indexed_dataset(dir.file("e"));
  EXPECT_EQ(ds.num_tokens, 0);
  EXPECT_EQ(ds.num_documents, 0);
}

TEST(IndexedDataset, RewritingReplacesTheOldDataset) {
  ScratchDir dir;
  write_indexed_dataset(dir.file("d"), {{1, 2, 3}}, TokenDType::u16);
  write_indexed_dataset(dir.file("d"), {{4}, {5}}, TokenDType::i32);
  IndexedDataset ds = open_indexed_dataset(dir.file("d"));
  EXPECT_EQ(ds.dtype, TokenDType::i32);
  EXPECT_EQ(ds.num_documents, 2);
  EXPECT_EQ(dir.listing(), (std::vector<std::string>{"d.bin", "d.idx"}));
}

TEST(IndexedDatasetWriter, TokenTooLargeNamesDocumentAndPositionAndLeavesNoFiles) {
  ScratchDir dir;
  expect_error(
      [&] {
        write_indexed_dataset(dir.file("w"), {{1, 2}, {3, 70000}}, TokenDType::u16);
      },
      {dir.file("w"), "document 1", "token 1 = 70000"});
  expect_error([&] { write_indexed_dataset(dir.file("w"), {{-1}}, TokenDType::i32); },
               {"document 0", "token 0 = -1"});
  EXPECT_TRUE(dir.listing().empty());
}

// A valid three-document uint16 dataset whose files the tests below then damage.
struct Damaged : ::testing::Test {
  ScratchDir dir;
  std::string prefix, idx, bin;
  std::vector<uint8_t> idx_bytes, bin_bytes;
  static constexpr size_t kPointersAt = 34 + 4 * 3, kDocIndicesAt = 34 + 12 * 3;

  void SetUp() override {
    prefix = dir.file("d");
    idx = prefix + ".idx";
    bin = prefix + ".bin";
    write_indexed_dataset(prefix, {{1, 2, 3}, {4, 5}, {6, 7, 8, 9}}, TokenDType::u16);
    idx_bytes = read_bytes(idx);
    bin_bytes = read_bytes(bin);
    ASSERT_EQ(idx_bytes.size(), 34u + 12 * 3 + 8 * 4);
    ASSERT_EQ(bin_bytes.size(), 18u);
  }
  void expect_open_error(std::initializer_list<std::string> parts) {
    write_bytes(idx, idx_bytes);
    write_bytes(bin, bin_bytes);
    expect_error([&] { open_indexed_dataset(prefix); }, parts);
  }
};

TEST_F(Damaged, MissingFiles) {
  std::filesystem::remove(bin);
  expect_error([&] { open_indexed_dataset(prefix); }, {bin, "cannot open"});
  std::filesystem::remove(idx);
  expect_error([&] { open_indexed_dataset(prefix); }, {idx, "cannot open"});
}

TEST_F(Damaged, TruncatedHeader) {
  idx_bytes.resize(20);
  expect_open_error({idx, "20 bytes", "header"});
}

TEST_F(Damaged, TruncatedIndexArrays) {
  idx_bytes.resize(idx_bytes.size() - 8);
  expect_open_error({idx, "sequence_count = 3", "document_count = 4"});
}

TEST_F(Damaged, BadMagic) {
  idx_bytes[2] = 'X';
  expect_open_error({idx, "magic"});
}

TEST_F(Damaged, BadVersion) {
  poke<uint64_t>(idx_bytes, 9, 2);
  expect_open_error({idx, "version = 2"});
}

TEST_F(Damaged, BadDtypeCodes) {
  for (uint8_t code : {0, 6, 7, 9, 255}) {
    idx_bytes[17] = code;
    expect_open_error({idx, fmt::format("dtype code = {}", code)});
  }
}

TEST_F(Damaged, ZeroDocumentCount) {
  poke<uint64_t>(idx_bytes, 26, 0);
  expect_open_error({idx, "document_count = 0"});
}

TEST_F(Damaged, BitFlippedCountsAreCaught) {
  for (size_t field : {18, 26}) {
    for (int bit = 0; bit < 64; ++bit) {
      std::vector<uint8_t> saved = idx_bytes;
      idx_bytes[field + bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      expect_open_error({idx, field == 18 ? "sequence_count" : "document_count"});
      idx_bytes = saved;
    }
  }
}

TEST_F(Damaged, PointerPastTheEndOfBin) {
  poke<int64_t>(idx_bytes, kPointersAt + 8 * 1, 9999);
  expect_open_error({fmt::format(
      "{}: sequence_pointers[1] = 9999 points past the end of {} (18 bytes)", idx, bin)});
}

TEST_F(Damaged, NegativePointer) {
  poke<int64_t>(idx_bytes, kPointersAt + 8 * 2, -4);
  expect_open_error({idx, "sequence_pointers[2] = -4"});
}

TEST_F(Damaged, MisalignedPointer) {
  poke<int64_t>(idx_bytes, kPointersAt + 8 * 1, 7);
  expect_open_error({idx, "sequence_pointers[1] = 7", "multiple"});
}

TEST_F(Damaged, PointersNotBackToBack) {
  poke<int64_t>(idx_bytes, kPointersAt + 8 * 2, 8);  // should be 10
  expect_open_error({idx, "sequence_pointers[2] = 8, expected 10"});
  poke<int64_t>(idx_bytes, kPointersAt + 8 * 2, 10);
  poke<int64_t>(idx_bytes, kPointersAt, 2);
  poke<int32_t>(idx_bytes, 34, 2);
  expect_open_error({idx, "sequence_pointers[0] = 2, expected 0"});
}

TEST_F(Damaged, NegativeLength) {
  poke<int32_t>(idx_bytes, 34 + 4, -5);
  expect_open_error({idx, "sequence_lengths[1] = -5"});
}

TEST_F(Damaged, LengthRunsPastTheEnd) {
  poke<int32_t>(idx_bytes, 34 + 4 * 2, 5);  // 4 tokens remain from its pointer
  expect_open_error({idx, "sequence_lengths[2] = 5", bin, "18 bytes"});
}

TEST_F(Damaged, TruncatedBin) {
  bin_bytes.resize(16);
  expect_open_error({idx, "sequence_lengths[2]", bin, "16 bytes"});
  bin_bytes.resize(6);
  expect_open_error({idx, "sequence_pointers[1] = 6", bin});
}

TEST_F(Damaged, OverlongBin) {
  bin_bytes.resize(20);
  expect_open_error({bin, "20 bytes", idx, "18 bytes", "sequence_lengths"});
}

TEST_F(Damaged, DocumentIndicesNotStartingAtZero) {
  poke<int64_t>(idx_bytes, kDocIndicesAt, 1);
  expect_open_error({idx, "document_indices[0] = 1"});
}

TEST_F(Damaged, DocumentIndicesDecreasing) {
  poke<int64_t>(idx_bytes, kDocIndicesAt + 8 * 2, 0);
  expect_open_error({idx, "document_indices[2] = 0", "document_indices[1] = 1"});
}

TEST_F(Damaged, DocumentIndicesPastSequenceCount) {
  poke<int64_t>(idx_bytes, kDocIndicesAt + 8 * 2, 7);
  expect_open_error({idx, "document_indices[2] = 7", "sequence_count = 3"});
}

TEST_F(Damaged, DocumentIndicesEndingEarly) {
  poke<int64_t>(idx_bytes, kDocIndicesAt + 8 * 3, 2);
  expect_open_error({idx, "document_indices[3] = 2", "sequence_count = 3"});
}

TEST(IndexedDataset, Int64TokenOutsideInt32IsAnErrorOnRead) {
  ScratchDir dir;
  const std::string prefix = dir.file("wide");
  std::vector<int64_t> tokens = {5, int64_t{1} << 40, 6};
  std::vector<uint8_t> bin(24);
  std::memcpy(bin.data(), tokens.data(), 24);
  write_bytes(prefix + ".bin", bin);
  write_bytes(prefix + ".idx", index_image(5, {3}, {0}, {0, 1}, false));
  IndexedDataset ds = open_indexed_dataset(prefix);
  std::vector<int32_t> out(3);
  read_tokens(ds, 0, 1, out.data());
  EXPECT_EQ(out[0], 5);
  expect_error([&] { read_tokens(ds, 0, 3, out.data()); },
               {prefix + ".bin", "token 1 = 1099511627776"});
  expect_error([&] { read_tokens(ds, 2, 2, out.data()); }, {prefix + ".bin", "outside"});
}

// Every single-bit flip and every truncation of either file either opens a dataset whose every
// token and document can be read, or throws sambay::Error: never a crash or another exception.
TEST_F(Damaged, EveryBitFlipAndTruncationIsSafe) {
  auto check = [&](const std::vector<uint8_t>& idx_image, const std::vector<uint8_t>& bin_image) {
    write_bytes(idx, idx_image);
    write_bytes(bin, bin_image);
    try {
      TokenSource src = open_token_source(prefix);
      std::vector<int32_t> all(num_tokens(src));
      read_tokens(src, 0, num_tokens(src), all.data());
      for (int64_t t = 0; t < num_tokens(src); ++t) {
        int64_t d = document_of(src, t);
        ASSERT_LE(document_start(src, d), t);
        ASSERT_GT(document_start(src, d + 1), t);
      }
    } catch (const Error&) {
    }
  };
  for (size_t byte = 0; byte < idx_bytes.size(); ++byte)
    for (int bit = 0; bit < 8; ++bit) {
      auto damaged = idx_bytes;
      damaged[byte] ^= static_cast<uint8_t>(1u << bit);
      check(damaged, bin_bytes);
    }
  for (size_t n = 0; n < idx_bytes.size(); ++n)
    check(std::vector<uint8_t>(idx_bytes.begin(), idx_bytes.begin() + n), bin_bytes);
  for (size_t n = 0; n < bin_bytes.size(); ++n)
    check(idx_bytes, std::vector<uint8_t>(bin_bytes.begin(), bin_bytes.begin() + n));
}

}  // namespace
}  // namespace sambay
