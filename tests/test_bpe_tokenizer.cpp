// The BPE tokenizer: merge order and errors on small vocabularies written here, and ids equal to
// tiktoken's for the real o200k_base and cl100k_base vocabularies on a multilingual corpus
// (tests/tokenizer/tiktoken_reference.py; skipped with a message without tiktoken/bpe-openai).
#include "io/bpe_tokenizer.h"
#include "io/data_tools.h"
#include "io/hf_tokenizer.h"
#include "io/token_source.h"
#include "tests/io_test_util.h"

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace sambay {
namespace {

using testing::expect_error;
using testing::ScratchDir;

std::string base64(std::string_view bytes) {
  static const char* digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = uint8_t(bytes[i]) << 16 | uint8_t(bytes[i + 1]) << 8 | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += digits[(v >> s) & 63];
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16;
    out += digits[(v >> 18) & 63], out += digits[(v >> 12) & 63], out += "==";
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = uint8_t(bytes[i]) << 16 | uint8_t(bytes[i + 1]) << 8;
    out += digits[(v >> 18) & 63], out += digits[(v >> 12) & 63], out += digits[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// A vocabulary of the 256 bytes (rank = byte value) followed by `merged` tokens.
std::string vocab_text(const std::vector<std::string>& merged) {
  std::string text;
  for (int b = 0; b < 256; ++b) text += fmt::format("{} {}\n", base64(std::string(1, char(b))), b);
  for (size_t i = 0; i < merged.size(); ++i) text += fmt::format("{} {}\n", base64(merged[i]), 256 + i);
  return text;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

void write_gzip(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), unsigned(text.size())), int(text.size()));
  gzclose(f);
}

// Letters, digits, whitespace and other runs: a small pattern for the small vocabularies.
const char* kSimplePattern = "\\p{L}+|\\p{N}+|\\s+|[^\\s\\p{L}\\p{N}]+";

BpeTokenizerOptions simple_options() {
  BpeTokenizerOptions o;
  o.pattern = kSimplePattern;
  o.specials = {{"<|eod|>", 1000}, {"<|x|>", 1001}};
  o.eod = "<|eod|>";
  return o;
}

std::vector<int32_t> encode(const std::shared_ptr<const BpeTokenizer>& t, std::string_view text,
                            bool specials = false) {
  BpeEncoder enc(t);
  std::vector<int32_t> ids;
  if (specials)
    enc.encode_with_specials(text, ids);
  else
    enc.encode_ordinary(text, ids);
  return ids;
}

TEST(BpeTokenizer, MergesLowestRankFirstLeftmostOnTies) {
  ScratchDir dir;
  // 256 "ab", 257 "bc", 258 "abc", 259 "aa", 260 "aaaa"
  write_text(dir.file("v.tiktoken"), vocab_text({"ab", "bc", "abc", "aa", "aaaa"}));
  const auto t = BpeTokenizer::load(dir.file("v.tiktoken"), simple_options());
  EXPECT_EQ(t->name(), "custom");
  EXPECT_EQ(t->eod(), 1000);
  EXPECT_EQ(t->vocab_size(), 1002);
  // "abc" is a token itself; "abcb": "ab" (256) before "bc" (257), then "abc"? no: "ab"+"c" ->
  // "abc" (258) needs parts "ab","c" adjacent: yes, then "b" stays.
  EXPECT_EQ(encode(t, "abc"), (std::vector<int32_t>{258}));
  EXPECT_EQ(encode(t, "abcb"), (std::vector<int32_t>{258, 'b'}));
  // "bcab": "ab" (256) merges first although "bc" comes first; "bc" (257) then.
  EXPECT_EQ(encode(t, "bcab"), (std::vector<int32_t>{257, 256}));
  // Ties go left: "aaa" -> "aa" + "a".
  EXPECT_EQ(encode(t, "aaa"), (std::vector<int32_t>{259, 'a'}));
  // Long pieces (more than 64 bytes) take the heap: the same leftmost-first merges.
  EXPECT_EQ(encode(t, std::string(100, 'a')), std::vector<int32_t>(25, 260));
  std::vector<int32_t> want(25, 260);
  want.push_back(259);
  want.push_back('a');
  EXPECT_EQ(encode(t, std::string(103, 'a')), want);
  // Pieces are merged separately: "a a" never merges across the space.
  EXPECT_EQ(encode(t, "aa aa"), (std::vector<int32_t>{259, ' ', 259}));
}

TEST(BpeTokenizer, SpecialTokensOnlyWhenAllowed) {
  ScratchDir dir;
  write_text(dir.file("v.tiktoken"), vocab_text({}));
  const auto t = BpeTokenizer::load(dir.file("v.tiktoken"), simple_options());
  const std::vector<int32_t> ordinary = encode(t, "a<|eod|>b");
  EXPECT_EQ(t->decode(ordinary), "a<|eod|>b");
  EXPECT_EQ(ordinary.size(), 9u);
  EXPECT_EQ(encode(t, "a<|eod|>b<|x|>", true), (std::vector<int32_t>{'a', 1000, 'b', 1001}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{'a', 1000}), "a<|eod|>");
  expect_error([&] { t->decode(std::vector<int32_t>{'a', 999}); }, {"999", "position 1"});
}

TEST(BpeTokenizer, InvalidUtf8IsKeptByteForByte) {
  ScratchDir dir;
  write_text(dir.file("v.tiktoken"), vocab_text({"ab"}));
  const auto t = BpeTokenizer::load(dir.file("v.tiktoken"), simple_options());
  const std::string text = "ab\xff\xfe cd\xc3(\x80 \xe2\x82 end\xf0";
  BpeEncoder enc(t);
  std::vector<int32_t> ids;
  enc.encode_ordinary(text, ids);
  EXPECT_EQ(t->decode(ids), text);
  EXPECT_EQ(enc.unmatched_bytes(), 7);  // ff fe c3 80 e2 82 f0
}

TEST(BpeTokenizer, GzipAndPlainVocabulariesAreTheSame) {
  ScratchDir dir;
  const std::string text = vocab_text({"ab", "bc"});
  write_text(dir.file("v.tiktoken"), text);
  write_gzip(dir.file("v.tiktoken.gz"), text);
  const BpeVocab a = load_tiktoken_vocab(dir.file("v.tiktoken"));
  const BpeVocab b = load_tiktoken_vocab(dir.file("v.tiktoken.gz"));
  EXPECT_EQ(a.arena, b.arena);
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_EQ(b.find("bc", 2), 257);
  EXPECT_EQ(b.find("cb", 2), -1);
  EXPECT_EQ(b.token(256), "ab");
}

TEST(BpeTokenizer, BadVocabulariesAndOptionsAreNamed) {
  ScratchDir dir;
  const std::string v = dir.file("v.tiktoken");
  write_text(v, vocab_text({}) + "YWI= 256\nnot-base64 257\n");
  expect_error([&] { load_tiktoken_vocab(v); }, {v + ":258", "not base64"});
  write_text(v, vocab_text({}) + "YWI= x\n");
  expect_error([&] { load_tiktoken_vocab(v); }, {v + ":257", "rank 'x'"});
  write_text(v, vocab_text({}) + "YWI= 300\n");
  expect_error([&] { load_tiktoken_vocab(v); }, {v, "rank 300", "none missing"});
  write_text(v, vocab_text({}) + "YWI= 255\n");
  expect_error([&] { load_tiktoken_vocab(v); }, {v, "rank 255 is given twice"});
  write_text(v, vocab_text({}) + "YQ== 256\n");  // "a" again
  expect_error([&] { load_tiktoken_vocab(v); }, {v, "rank 256 is also the token of rank 97"});
  std::string no_byte = vocab_text({});
  no_byte.replace(no_byte.find("AA== 0\n"), 7, "YWE= 0\n");  // byte 0 replaced by "aa"
  write_text(v, no_byte);
  expect_error([&] { load_tiktoken_vocab(v); }, {v, "0x00 is not a token"});
  expect_error([&] { load_tiktoken_vocab(dir.file("missing.tiktoken")); },
               {dir.file("missing.tiktoken"), "cannot open"});

  write_text(v, vocab_text({"ab"}));
  expect_error([&] { BpeTokenizer::load(v); }, {v, "--pattern", "does not know"});
  BpeTokenizerOptions o = simple_options();
  o.pattern = "(unclosed";
  expect_error([&] { BpeTokenizer::load(v, o); }, {"--pattern", "offset"});
  o = simple_options();
  o.specials.push_back({"<|in-ranks|>", 256});
  expect_error([&] { BpeTokenizer::load(v, o); }, {"--special", "256", "<|in-ranks|>"});
  o = simple_options();
  o.specials.push_back({"<|twin|>", 1000});
  expect_error([&] { BpeTokenizer::load(v, o); }, {"--special", "same id 1000"});
  o = simple_options();
  o.eod = "<|endoftext|>";
  expect_error([&] { BpeTokenizer::load(v, o); }, {"--eod", "<|endoftext|>", "<|eod|>"});
  o = simple_options();
  o.pattern = "a*";
  const auto empty_matcher = BpeTokenizer::load(v, o);
  expect_error([&] { encode(empty_matcher, "b"); }, {"--pattern", "empty string"});
}

// Corpus formats through the whole pipeline, on the byte tokenizer (no vocabulary needed).
std::vector<std::string> byte_documents(const std::string& prefix) {
  TokenSource src = open_token_source(prefix);
  std::vector<std::string> docs;
  for (int64_t d = 0; d < num_documents(src); ++d) {
    const int64_t begin = document_start(src, d), end = document_start(src, d + 1);
    std::vector<int32_t> tokens(end - begin);
    read_tokens(src, begin, end - begin, tokens.data());
    EXPECT_EQ(tokens.back(), 256);
    docs.emplace_back(tokens.begin(), tokens.end() - 1);
  }
  return docs;
}

TEST(TokenizeCorpus, JsonlWithAKeyBlankLinesAndGzip) {
  ScratchDir dir;
  const std::string lines =
      "{\"text\": \"first\", \"body\": \"b1\"}\n\n  \n"
      "{\"body\": \"b2 \\u00e9\\ud83d\\ude00\", \"text\": \"\"}\n{\"body\": \"\"}\n";
  write_text(dir.file("a.jsonl"), lines);
  write_gzip(dir.file("b.jsonl.gz"), lines);
  TokenizeOptions o;
  o.json_key = "body";
  const TokenizeReport r =
      tokenize_corpus({dir.file("a.jsonl"), dir.file("b.jsonl.gz")}, dir.file("out"), o);
  EXPECT_EQ(byte_documents(dir.file("out")),
            (std::vector<std::string>{"b1", "b2 \xc3\xa9\xf0\x9f\x98\x80", "b1",
                                      "b2 \xc3\xa9\xf0\x9f\x98\x80"}));
  EXPECT_EQ(r.files, 2);
  EXPECT_EQ(r.blank_lines, 4);
  EXPECT_EQ(r.empty_skipped, 2);
  EXPECT_EQ(to_string(r), "2 files -> 4 documents, 26 tokens (2 empty documents skipped; 4 blank "
                          "lines skipped)");
  const nlohmann::json note = nlohmann::json::parse(testing::read_bytes(dir.file("out.tokenizer.json")));
  EXPECT_EQ(note["tokenizer"], "byte");
  EXPECT_EQ(note["eod"], 256);
}

TEST(TokenizeCorpus, BadJsonlLinesAreNamedAndNothingIsWritten) {
  ScratchDir dir;
  const std::string f = dir.file("c.jsonl");
  for (const auto& [content, why] : std::vector<std::pair<std::string, std::string>>{
           {"{\"text\": \"ok\"}\n{\"text\": \"no end}\n", ":2: not valid JSON"},
           {"{\"text\": \"ok\"}\n\n{\"txt\": \"x\"}\n", ":3: no key 'text'"},
           {"{\"text\": 5}\n", ":1: key 'text' holds number, not a string"},
           {"[1, 2]\n", ":1: a JSONL line must hold an object, this one holds array"}}) {
    write_text(f, content);
    expect_error([&] { tokenize_corpus({f}, dir.file("out"), TokenizeOptions{}); }, {f + why});
    EXPECT_EQ(dir.listing(), std::vector<std::string>{"c.jsonl"});
  }
}

TEST(TokenizeCorpus, ParagraphsAndFilesAcrossReadChunks) {
  ScratchDir dir;
  // Paragraphs longer than the reader's 1 MiB chunks, some lines split across chunk ends.
  std::string text, p1(1500000, 'x'), p2 = "short\r\nsecond line";
  for (size_t i = 1000; i < p1.size(); i += 1000) p1[i] = '\n';
  text = "\n\n" + p1 + "\n \t\n" + p2 + "\n";
  write_gzip(dir.file("t.txt.gz"), text);
  TokenizeOptions o;
  tokenize_corpus({dir.file("t.txt.gz")}, dir.file("para"), o);
  EXPECT_EQ(byte_documents(dir.file("para")), (std::vector<std::string>{p1, p2}));
  o.split = DocSplit::whole_file;
  o.threads = 3;
  tokenize_corpus({dir.file("t.txt.gz")}, dir.file("whole"), o);
  EXPECT_EQ(byte_documents(dir.file("whole")), std::vector<std::string>{text});
}

// --- Against tiktoken ---------------------------------------------------------------------

struct Reference {
  std::string skip_reason;  // non-empty: tiktoken or bpe-openai is missing
  std::string dir;
  std::vector<std::string> docs;
  ~Reference() {
    std::filesystem::remove_all(dir);
    std::filesystem::remove(dir + ".log");
  }
};

std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<int32_t>> out;
  for (std::string line; std::getline(in, line);) {
    std::istringstream s(line);
    out.emplace_back(std::istream_iterator<int32_t>(s), std::istream_iterator<int32_t>());
  }
  return out;
}

using testing::read_text;

// Runs the reference script once for the whole program.
const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    r.dir = (std::filesystem::temp_directory_path() / fmt::format("sambay_tiktoken_{}", getpid()))
                .string();
    const std::string cmd = fmt::format("'{}' '{}/tests/tokenizer/tiktoken_reference.py' '{}' > '{}.log' 2>&1",
                                        SAMBAY_PYTHON3, SAMBAY_SOURCE_DIR, r.dir, r.dir);
    const int status = std::system(cmd.c_str());
    const std::string log = read_text(r.dir + ".log");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
      r.skip_reason = log;
      return r;
    }
    EXPECT_EQ(status, 0) << log;
    std::ifstream in(r.dir + "/corpus.jsonl");
    for (std::string line; std::getline(in, line);)
      r.docs.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
    std::printf("reference corpus: %s", log.c_str());
    return r;
  }();
  return ref;
}

class AgainstTiktoken : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!reference().skip_reason.empty()) GTEST_SKIP() << reference().skip_reason;
    ASSERT_FALSE(reference().docs.empty());
  }
  std::string vocab_path() const { return read_text(reference().dir + "/" + GetParam() + ".path"); }
  std::vector<std::vector<int32_t>> ids(const std::string& kind) const {
    return read_ids(reference().dir + "/" + GetParam() + "." + kind + ".ids");
  }
};

TEST_P(AgainstTiktoken, EveryDocumentHasTiktokensIds) {
  const auto t = BpeTokenizer::load(vocab_path());
  EXPECT_EQ(t->name(), GetParam());
  const std::vector<std::string>& docs = reference().docs;
  const auto ordinary = ids("ordinary"), special = ids("special");
  ASSERT_EQ(ordinary.size(), docs.size());
  ASSERT_EQ(special.size(), docs.size());
  BpeEncoder enc(t);
  int64_t tokens = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    std::vector<int32_t> got;
    enc.encode_ordinary(docs[d], got);
    ASSERT_EQ(got, ordinary[d]) << "document " << d << ": " << docs[d].substr(0, 200);
    EXPECT_EQ(t->decode(got), docs[d]);
    got.clear();
    enc.encode_with_specials(docs[d], got);
    ASSERT_EQ(got, special[d]) << "document " << d << " with special tokens";
    tokens += static_cast<int64_t>(ordinary[d].size());
  }
  EXPECT_EQ(enc.unmatched_bytes(), 0);
  std::printf("%s: %zu documents, %lld tokens equal to tiktoken's\n", GetParam().c_str(),
              docs.size(), static_cast<long long>(tokens));
}

TEST_P(AgainstTiktoken, DatasetFromJsonlOnAnyNumberOfThreads) {
  ScratchDir dir;
  const std::vector<std::vector<int32_t>> want_docs = ids("ordinary");
  std::vector<int32_t> want;
  const auto t = BpeTokenizer::load(vocab_path());
  for (const auto& d : want_docs) {
    if (d.empty()) continue;  // empty documents are skipped
    want.insert(want.end(), d.begin(), d.end());
    want.push_back(t->eod());
  }
  TokenizeOptions o;
  o.tokenizer = vocab_path();
  for (int threads : {1, 3}) {
    o.threads = threads;
    const std::string out = dir.file(fmt::format("t{}", threads));
    const TokenizeReport r = tokenize_corpus({reference().dir + "/corpus.jsonl"}, out, o);
    TokenSource src = open_token_source(out);
    EXPECT_EQ(token_dtype(src), TokenDType::i32);
    std::vector<int32_t> got(num_tokens(src));
    read_tokens(src, 0, num_tokens(src), got.data());
    EXPECT_EQ(got, want) << threads << " threads";
    EXPECT_EQ(r.tokens, static_cast<int64_t>(want.size()));
    const nlohmann::json note = nlohmann::json::parse(read_text(out + ".tokenizer.json"));
    EXPECT_EQ(note["tokenizer"], GetParam());
    EXPECT_EQ(note["eod"], t->eod());
    EXPECT_EQ(note["vocab_size"], t->vocab_size());
  }
  EXPECT_EQ(testing::read_bytes(dir.file("t1.bin")), testing::read_bytes(dir.file("t3.bin")));
  EXPECT_EQ(testing::read_bytes(dir.file("t1.idx")), testing::read_bytes(dir.file("t3.idx")));
}

TEST_P(AgainstTiktoken, HuggingFaceTokenizerFilesGiveTheSameIds) {
  ScratchDir dir;
  const auto t = BpeTokenizer::load(vocab_path());
  if (GetParam() == "o200k_base") {
    EXPECT_EQ(t->hf_pattern(), read_text(reference().dir + "/" + GetParam() + ".pattern"));
  }
  const std::vector<std::string> files = write_hf_tokenizer(*t, t->eod(), 4096, dir.path.string());
  EXPECT_EQ(files, (std::vector<std::string>{"tokenizer.json", "tokenizer_config.json",
                                             "special_tokens_map.json"}));
  const nlohmann::json config = nlohmann::json::parse(read_text(dir.file("tokenizer_config.json")));
  EXPECT_EQ(config["eos_token"], "<|endoftext|>");
  EXPECT_EQ(config["added_tokens_decoder"][std::to_string(t->eod())]["content"], "<|endoftext|>");
  const std::string cmd =
      fmt::format("'{}' '{}/tests/tokenizer/hf_tokenizer_check.py' '{}' {} '{}' > '{}' 2>&1",
                  SAMBAY_PYTHON3, SAMBAY_SOURCE_DIR, reference().dir, GetParam(),
                  dir.path.string(), dir.file("check.log"));
  const int status = std::system(cmd.c_str());
  const std::string log = read_text(dir.file("check.log"));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << log;
  EXPECT_EQ(status, 0) << log;
  std::printf("%s", log.c_str());
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, AgainstTiktoken,
                         ::testing::Values("o200k_base", "cl100k_base"));

// o200k's hand-written matcher cuts every document where PCRE2 running the pattern does (the
// same pattern in a group, which the matcher does not take over).
TEST(O200kAgainstRegex, MatcherSplitsTheCorpusAsTheRegex) {
  if (!reference().skip_reason.empty()) GTEST_SKIP() << reference().skip_reason;
  ASSERT_FALSE(reference().docs.empty());
  const std::string vocab_path = read_text(reference().dir + "/o200k_base.path");
  const auto fast = BpeTokenizer::load(vocab_path);
  BpeTokenizerOptions o;
  o.pattern = "(?:" + fast->pattern() + ")";
  const auto regex = BpeTokenizer::load(vocab_path, o);
  ASSERT_EQ(fast->regex_engine().rfind("o200k matcher", 0), 0u) << fast->regex_engine();
  ASSERT_EQ(regex->regex_engine().rfind("PCRE2", 0), 0u) << regex->regex_engine();
  BpeEncoder a(fast), b(regex);
  int64_t pieces = 0;
  for (const std::string& doc : reference().docs) {
    std::vector<std::string_view> from_matcher, from_regex;
    a.split(doc, from_matcher);
    b.split(doc, from_regex);
    ASSERT_EQ(from_matcher, from_regex) << doc.substr(0, 200);
    pieces += static_cast<int64_t>(from_regex.size());
  }
  std::printf("%zu documents, %lld pieces cut alike\n", reference().docs.size(),
              static_cast<long long>(pieces));
}

}  // namespace
}  // namespace sambay
