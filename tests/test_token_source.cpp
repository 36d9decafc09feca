#include "io/token_source.h"
#include "tests/io_test_util.h"

#include "core/philox.h"

namespace sambay {
namespace {

using testing::expect_error;
using testing::ScratchDir;
using testing::write_bytes;

// The document of every token by a linear walk over the document starts.
std::vector<int64_t> documents_by_walking(const TokenSource& src) {
  std::vector<int64_t> doc(num_tokens(src));
  for (int64_t d = 0; d < num_documents(src); ++d)
    for (int64_t t = document_start(src, d); t < document_start(src, d + 1); ++t) doc[t] = d;
  return doc;
}

TEST(TokenSource, DetectsTheFormatFromThePath) {
  ScratchDir dir;
  write_indexed_dataset(dir.file("ds"), {{1, 2}, {3}}, TokenDType::u16);
  std::vector<int32_t> flat = {1, 2, 0, 3};
  write_token_file(dir.file("flat.tok"), flat.data(), 4, 0, 2);
  for (std::string p : {"ds", "ds.idx", "ds.bin"}) {
    TokenSource src = open_token_source(dir.file(p));
    EXPECT_EQ(src.format, TokenFormat::indexed) << p;
    EXPECT_EQ(num_tokens(src), 3) << p;
    EXPECT_EQ(num_documents(src), 2) << p;
  }
  TokenSource src = open_token_source(dir.file("flat.tok"));
  EXPECT_EQ(src.format, TokenFormat::flat);
  EXPECT_EQ(num_tokens(src), 4);
  EXPECT_EQ(num_documents(src), 2);
  EXPECT_EQ(token_dtype(src), TokenDType::u16);
}

TEST(TokenSource, UnknownOrMissingFilesAreNamed) {
  ScratchDir dir;
  write_bytes(dir.file("junk"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'});
  expect_error([&] { open_token_source(dir.file("junk")); }, {dir.file("junk"), "neither"});
  expect_error([&] { open_token_source(dir.file("none")); }, {dir.file("none"), "no such"});
  expect_error([&] { open_token_source(dir.file("none.idx")); }, {dir.file("none.idx")});
}

TEST(TokenSource, DocumentOfMatchesALinearWalkForBothFormats) {
  ScratchDir dir;
  // Random document lengths, with empty documents in the indexed dataset.
  std::vector<std::vector<int32_t>> docs;
  std::vector<int32_t> flat;
  for (int d = 0; d < 200; ++d) {
    int64_t len = static_cast<int64_t>(philox_below(3, 0, d, 7));
    docs.emplace_back(len, 1);
    flat.insert(flat.end(), len, 1);
    flat.push_back(0);  // eod: the flat file's documents are never empty
  }
  write_indexed_dataset(dir.file("ds"), docs, TokenDType::u8);
  write_token_file(dir.file("flat"), flat.data(), static_cast<int64_t>(flat.size()), 0, 4);
  for (std::string p : {"ds", "flat"}) {
    TokenSource src = open_token_source(dir.file(p));
    auto expected = documents_by_walking(src);
    for (int64_t t = 0; t < num_tokens(src); ++t)
      ASSERT_EQ(document_of(src, t), expected[t]) << p << " token " << t;
    expect_error([&] { document_of(src, num_tokens(src)); }, {dir.file(p), "outside"});
    expect_error([&] { document_of(src, -1); }, {"outside"});
  }
}

}  // namespace
}  // namespace sambay
