#include <fmt/format.h>

#include <set>
#include <stdexcept>
#include <string>

#include "kernels/embedding.h"
#include "tests/test_util.h"

namespace sambay {
namespace {

using testing::GradInput;

struct EmbeddingCase {
  int64_t n, vocab, d;
};

// n tokens drawn uniformly from [0, vocab), reproducible from seed.
std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>(philox_below(seed, 1, i, vocab));
  return tokens;
}

class EmbeddingTest : public ::testing::TestWithParam<EmbeddingCase> {};

TEST_P(EmbeddingTest, GradientsMatchFiniteDifferences) {
  const auto [n, vocab, d] = GetParam();
  const auto tokens = random_tokens(n, vocab, 1);
  // Every case has more tokens than the vocabulary, so some row is gathered more than once and
  // the check covers the accumulation of repeated tokens.
  ASSERT_LT(std::set<int32_t>(tokens.begin(), tokens.end()).size(), tokens.size());
  auto table = testing::random_normal(vocab * d, 2);
  auto probe = testing::random_normal(n * d, 3);
  std::vector<double> out(n * d);

  auto loss = [&] {
    embedding_forward(tokens.data(), table.data(), out.data(), n, vocab, d);
    return testing::dot(out, probe);
  };
  loss();
  std::vector<double> dtable(table.size());
  embedding_backward(tokens.data(), probe.data(), dtable.data(), n, vocab, d);
  // Every element of the table (samples_per_input above its size), so repeated rows are checked.
  testing::expect_gradients_match(loss, {{"table", &table, &dtable}}, 1e-6,
                                  static_cast<int>(table.size()));
}

TEST_P(EmbeddingTest, Float32MatchesFloat64) {
  const auto [n, vocab, d] = GetParam();
  const auto tokens = random_tokens(n, vocab, 4);
  auto table = testing::random_normal(vocab * d, 5);
  std::vector<double> out(n * d);
  embedding_forward(tokens.data(), table.data(), out.data(), n, vocab, d);
  auto table_f = testing::to_f32(table);
  std::vector<float> out_f(n * d);
  embedding_forward(tokens.data(), table_f.data(), out_f.data(), n, vocab, d);
  EXPECT_LT(testing::relative_error(out_f, out), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingTest,
                         ::testing::Values(EmbeddingCase{2, 1, 1}, EmbeddingCase{7, 3, 5},
                                           EmbeddingCase{20, 6, 16}, EmbeddingCase{50, 9, 67},
                                           EmbeddingCase{9, 4, 130}),
                         [](const auto& info) {
                           const EmbeddingCase& c = info.param;
                           return fmt::format("n{}_vocab{}_d{}", c.n, c.vocab, c.d);
                         });

TEST(Embedding, RepeatedTokensAccumulateInBackward) {
  const int64_t vocab = 4, d = 3;
  const std::vector<int32_t> tokens = {2, 0, 2, 2};
  const std::vector<double> dout = {1, 2, 3, 10, 20, 30, 100, 200, 300, 1000, 2000, 3000};
  std::vector<double> dtable(vocab * d);
  embedding_backward(tokens.data(), dout.data(), dtable.data(), 4, vocab, d);
  const std::vector<double> expected = {10, 20, 30, 0, 0, 0, 1101, 2202, 3303, 0, 0, 0};
  EXPECT_EQ(dtable, expected);
}

TEST(Embedding, BackwardAccumulatesIntoGradients) {
  const int64_t n = 6, vocab = 4, d = 5;
  const auto tokens = random_tokens(n, vocab, 6);
  auto dout = testing::random_normal(n * d, 7);
  std::vector<double> dtable1(vocab * d);
  embedding_backward(tokens.data(), dout.data(), dtable1.data(), n, vocab, d);
  std::vector<double> dtable2 = dtable1;
  embedding_backward(tokens.data(), dout.data(), dtable2.data(), n, vocab, d);
  for (size_t i = 0; i < dtable1.size(); ++i) EXPECT_DOUBLE_EQ(dtable2[i], 2 * dtable1[i]);
}

// Runs f, expecting it to throw with a message that contains `needle`.
template <typename F>
void expect_throws_naming(F f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error naming " << needle;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message \"" << e.what() << "\" does not name " << needle;
  }
}

TEST(Embedding, OutOfRangeTokenThrowsNamingTheValue) {
  const int64_t vocab = 10, d = 2;
  std::vector<double> table(vocab * d), out(3 * d), dout(3 * d), dtable(vocab * d);
  // The bad values are chosen unlike any other number in the message (vocab, position).
  for (int32_t bad : {123457, -7, 10}) {
    const std::vector<int32_t> tokens = {1, bad, 3};
    const std::string needle = bad == 10 ? "token 10" : std::to_string(bad);
    expect_throws_naming(
        [&] { embedding_forward(tokens.data(), table.data(), out.data(), 3, vocab, d); }, needle);
    expect_throws_naming(
        [&] { embedding_backward(tokens.data(), dout.data(), dtable.data(), 3, vocab, d); },
        needle);
  }
  // A failed backward left the gradient untouched.
  for (double v : dtable) EXPECT_EQ(v, 0.0);
}

}  // namespace
}  // namespace sambay
