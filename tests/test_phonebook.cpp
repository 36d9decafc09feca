#include "io/phonebook.h"
#include "io/byte_tokenizer.h"
#include "io/token_source.h"
#include "tests/io_test_util.h"

#include <regex>
#include <set>

namespace sambay {
namespace {

// Splits a prompt into its entry lines and the queried name.
struct Parsed {
  std::vector<std::string> names, numbers;
  std::string query;
};
Parsed parse(const std::string& prompt) {
  static const std::regex entry("([A-Z][a-z]+ [A-Z][a-z]+): (555-[0-9]{4})");
  static const std::regex query("Phone of ([A-Z][a-z]+ [A-Z][a-z]+)\\? ");
  Parsed p;
  size_t at = 0;
  while (true) {
    size_t nl = prompt.find('\n', at);
    if (nl == std::string::npos) break;
    std::smatch m;
    std::string line = prompt.substr(at, nl - at);
    EXPECT_TRUE(std::regex_match(line, m, entry)) << "bad entry line \"" << line << "\"";
    p.names.push_back(m[1]);
    p.numbers.push_back(m[2]);
    at = nl + 1;
  }
  std::smatch m;
  std::string last = prompt.substr(at);
  EXPECT_TRUE(std::regex_match(last, m, query)) << "bad query line \"" << last << "\"";
  p.query = m[1];
  return p;
}

// A perfect retriever: looks the queried name up in the context and emits the answer's next byte.
int32_t oracle(const std::vector<int32_t>& context) {
  const std::string text = byte_decode(context);
  const size_t q = text.rfind("Phone of ");
  const size_t mark = text.find("? ", q);
  const std::string name = text.substr(q + 9, mark - q - 9);
  const std::string typed = text.substr(mark + 2);
  const size_t entry = text.find(name + ": ");
  const std::string number = text.substr(entry + name.size() + 2, 8);
  return static_cast<unsigned char>(number[typed.size()]);
}

TEST(Phonebook, ExamplesAreWellFormedWithUniqueNamesAndNumbers) {
  for (int64_t entries :
       {int64_t{1}, int64_t{2}, int64_t{17}, int64_t{300}, phonebook_max_entries()}) {
    for (int64_t index : {0, 1, 7}) {
      PhonebookExample ex = make_phonebook_example(entries, 5, index);
      Parsed p = parse(ex.prompt);
      ASSERT_EQ(static_cast<int64_t>(p.names.size()), entries);
      EXPECT_EQ(std::set<std::string>(p.names.begin(), p.names.end()).size(), p.names.size());
      EXPECT_EQ(std::set<std::string>(p.numbers.begin(), p.numbers.end()).size(), p.numbers.size());
      // The answer is the queried name's number.
      auto it = std::find(p.names.begin(), p.names.end(), p.query);
      ASSERT_NE(it, p.names.end());
      EXPECT_EQ(ex.answer, p.numbers[it - p.names.begin()]);
    }
  }
}

TEST(Phonebook, DeterministicFromSeedAndIndex) {
  PhonebookExample a = make_phonebook_example(50, 9, 3), b = make_phonebook_example(50, 9, 3);
  EXPECT_EQ(a.prompt, b.prompt);
  EXPECT_EQ(a.answer, b.answer);
  EXPECT_NE(make_phonebook_example(50, 9, 4).prompt, a.prompt);
  EXPECT_NE(make_phonebook_example(50, 10, 3).prompt, a.prompt);
  // The queried entry is spread over the book, not always the same position.
  std::set<size_t> positions;
  for (int64_t i = 0; i < 40; ++i) {
    PhonebookExample ex = make_phonebook_example(20, 1, i);
    Parsed p = parse(ex.prompt);
    positions.insert(std::find(p.names.begin(), p.names.end(), p.query) - p.names.begin());
  }
  EXPECT_GT(positions.size(), 8u);
}

TEST(Phonebook, AccuracyOfPerfectWrongAndHalfRightModels) {
  EXPECT_EQ(phonebook_accuracy(oracle, 20, 30, 4), 1.0);
  EXPECT_EQ(phonebook_accuracy([](const std::vector<int32_t>&) { return int32_t{'5'}; }, 20, 30, 4),
            0.0);
  // Wrong in the last digit of every second query: exactly half right.
  int64_t query = -1;
  auto half = [&](const std::vector<int32_t>& context) {
    const std::string text = byte_decode(context);
    const size_t typed = text.size() - (text.rfind("? ") + 2);
    if (typed == 0) ++query;  // the first call for a new query
    const int32_t right = oracle(context);
    if (query % 2 == 1 && typed == 7) return right == '0' ? int32_t{'1'} : int32_t{'0'};
    return right;
  };
  EXPECT_EQ(phonebook_accuracy(half, 10, 30, 4), 0.5);
}

TEST(Phonebook, DatasetDocumentsArePromptAnswerAndEod) {
  testing::ScratchDir dir;
  write_phonebook_dataset(dir.file("pb"), 5, 12, 77);
  TokenSource src = open_token_source(dir.file("pb"));
  ASSERT_EQ(num_documents(src), 5);
  for (int64_t d = 0; d < 5; ++d) {
    const int64_t begin = document_start(src, d), end = document_start(src, d + 1);
    std::vector<int32_t> tokens(end - begin);
    read_tokens(src, begin, end - begin, tokens.data());
    EXPECT_EQ(tokens.back(), kByteEod);
    PhonebookExample ex = make_phonebook_example(12, 77, d);
    EXPECT_EQ(byte_decode(tokens), ex.prompt + ex.answer + "\n");
  }
}

TEST(Phonebook, EntryCountIsChecked) {
  testing::expect_error([] { make_phonebook_example(0, 1, 0); }, {"not 0"});
  testing::expect_error([] { make_phonebook_example(phonebook_max_entries() + 1, 1, 0); },
                        {std::to_string(phonebook_max_entries() + 1)});
}

}  // namespace
}  // namespace sambay
