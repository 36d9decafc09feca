#include "io/data_tools.h"
#include "io/byte_tokenizer.h"
#include "io/token_source.h"
#include "tests/io_test_util.h"

#include <fstream>

namespace sambay {
namespace {

using testing::ScratchDir;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::vector<std::string> documents_of(const std::string& path) {
  TokenSource src = open_token_source(path);
  std::vector<std::string> docs;
  for (int64_t d = 0; d < num_documents(src); ++d) {
    const int64_t begin = document_start(src, d), end = document_start(src, d + 1);
    std::vector<int32_t> tokens(end - begin);
    read_tokens(src, begin, end - begin, tokens.data());
    EXPECT_EQ(tokens.back(), kByteEod) << "document " << d;
    tokens.pop_back();
    docs.push_back(byte_decode(tokens));
  }
  return docs;
}

TEST(TokenizeTextFiles, WholeFilesAreDocuments) {
  ScratchDir dir;
  write_text(dir.file("a.txt"), "first file\n\nwith two paragraphs\n");
  write_text(dir.file("empty.txt"), "");
  write_text(dir.file("b.txt"), "second");
  TokenizeOptions o;
  o.split = DocSplit::whole_file;
  TokenizeReport r =
      tokenize_corpus({dir.file("a.txt"), dir.file("empty.txt"), dir.file("b.txt")},
                      dir.file("out"), o);
  EXPECT_EQ(r.files, 3);
  EXPECT_EQ(r.documents, 2);
  EXPECT_EQ(r.empty_skipped, 1);
  EXPECT_EQ(r.tokens, 32 + 1 + 6 + 1);
  EXPECT_EQ(documents_of(dir.file("out")),
            (std::vector<std::string>{"first file\n\nwith two paragraphs\n", "second"}));
  EXPECT_EQ(to_string(r), "3 files -> 2 documents, 40 tokens (1 empty documents skipped)");
  TokenSource src = open_token_source(dir.file("out"));
  EXPECT_EQ(token_dtype(src), TokenDType::u16);
}

TEST(TokenizeTextFiles, ParagraphsAreRunsOfNonBlankLines) {
  ScratchDir dir;
  write_text(dir.file("a.txt"), "\n\nline one\nline two\n  \t\r\npara two\r\n\n\n\nlast");
  write_text(dir.file("b.txt"), "only\n");
  TokenizeReport r =
      tokenize_corpus({dir.file("a.txt"), dir.file("b.txt")}, dir.file("out"), TokenizeOptions{});
  EXPECT_EQ(r.documents, 4);
  EXPECT_EQ(documents_of(dir.file("out")),
            (std::vector<std::string>{"line one\nline two", "para two\r", "last", "only"}));
}

TEST(TokenizeTextFiles, MissingInputIsNamedAndNothingIsWritten) {
  ScratchDir dir;
  testing::expect_error(
      [&] { tokenize_corpus({dir.file("nope.txt")}, dir.file("out"), TokenizeOptions{}); },
      {dir.file("nope.txt")});
  EXPECT_TRUE(dir.listing().empty());
}

TEST(DatasetStats, SummarizesTokensDocumentsAndIds) {
  ScratchDir dir;
  write_indexed_dataset(dir.file("s"), {{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 300}}, TokenDType::u16);
  const std::string stats = dataset_stats(dir.file("s"));
  for (std::string part : {"Megatron indexed dataset", "uint16", "tokens:    10", "documents: 3",
                           "min 1, mean 3.3, max 6", "token ids: 1..300, 10 distinct",
                           "[1, 2):            1 ( 33.3%)", "[4, 8):            1"})
    EXPECT_NE(stats.find(part), std::string::npos) << "missing \"" << part << "\" in\n" << stats;
  std::vector<int32_t> flat = {7, 0, 7, 7, 0};
  write_token_file(dir.file("f"), flat.data(), 5, 0, 4);
  const std::string flat_stats = dataset_stats(dir.file("f"));
  for (std::string part : {"sambay token file", "int32", "eod token: 0", "documents: 2",
                           "token ids: 0..7, 2 distinct"})
    EXPECT_NE(flat_stats.find(part), std::string::npos) << "missing \"" << part << "\" in\n"
                                                        << flat_stats;
}

}  // namespace
}  // namespace sambay
