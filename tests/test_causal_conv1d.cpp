#include "kernels/causal_conv1d.h"
#include "core/check.h"
#include "tests/test_util.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>

namespace sambay {
namespace {

using testing::GradInput;

struct ConvCase {
  int64_t B, L, C, K;
  bool docs;
};

std::string describe(const ConvCase& c) {
  return fmt::format("B{}_L{}_C{}_K{}{}", c.B, c.L, c.C, c.K, c.docs ? "_docs" : "");
}
void PrintTo(const ConvCase& c, std::ostream* os) { *os << describe(c); }

// Packed documents: runs of lengths 3, 1, 2, 5, 4, ... (rotated per row), so some documents are
// shorter than the window. Ids alternate between two values, so an id comes back after another
// document: that is a new document all the same.
std::vector<int32_t> make_docs(int64_t B, int64_t L) {
  const int64_t lengths[] = {3, 1, 2, 5, 4};
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0, run = b;
    while (t < L) {
      const int64_t len = lengths[run % 5];
      for (int64_t j = 0; j < len && t < L; ++j, ++t) doc[b * L + t] = int32_t(10 * b + run % 2);
      ++run;
    }
  }
  return doc;
}

// The documents as (row, first token, length).
struct Segment {
  int64_t b, start, len;
};
std::vector<Segment> segments(const std::vector<int32_t>& doc, int64_t B, int64_t L) {
  std::vector<Segment> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      if (t == 0 || doc[b * L + t] != doc[b * L + t - 1])
        out.push_back({b, t, 1});
      else
        ++out.back().len;
  return out;
}

// Rows [start, start + len) of row b of a [B, L, C] tensor.
std::vector<double> slice(const std::vector<double>& v, const Segment& s, int64_t L, int64_t C) {
  auto from = v.begin() + (s.b * L + s.start) * C;
  return {from, from + s.len * C};
}

class CausalConv1dTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CausalConv1dTest, GradientsMatchFiniteDifferences) {
  const auto [B, L, C, K, docs] = GetParam();
  auto x = testing::random_normal(B * L * C, 1);
  auto w = testing::random_normal(C * K, 2, 0.5);
  auto bias = testing::random_normal(C, 3);
  auto probe = testing::random_normal(B * L * C, 4);
  const auto doc_ids = make_docs(B, L);
  const int32_t* doc = docs ? doc_ids.data() : nullptr;
  std::vector<double> y(B * L * C);

  auto loss = [&] {
    causal_conv1d_forward(x.data(), w.data(), bias.data(), doc, y.data(), B, L, C, K);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(x.size()), dw(w.size()), dbias(bias.size());
  causal_conv1d_backward(probe.data(), x.data(), w.data(), doc, dx.data(), dw.data(), dbias.data(),
                         B, L, C, K);
  testing::expect_gradients_match(loss,
                                  {{"x", &x, &dx}, {"weight", &w, &dw}, {"bias", &bias, &dbias}});
}

TEST_P(CausalConv1dTest, Float32MatchesFloat64) {
  const auto [B, L, C, K, docs] = GetParam();
  auto x = testing::random_normal(B * L * C, 5);
  auto w = testing::random_normal(C * K, 6, 0.5);
  auto bias = testing::random_normal(C, 7);
  const auto doc_ids = make_docs(B, L);
  const int32_t* doc = docs ? doc_ids.data() : nullptr;
  std::vector<double> y(B * L * C);
  causal_conv1d_forward(x.data(), w.data(), bias.data(), doc, y.data(), B, L, C, K);
  auto xf = testing::to_f32(x), wf = testing::to_f32(w), bf = testing::to_f32(bias);
  std::vector<float> yf(B * L * C);
  causal_conv1d_forward(xf.data(), wf.data(), bf.data(), doc, yf.data(), B, L, C, K);
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
}

// Packed documents give exactly what running every document as its own row gives.
class CausalConv1dDocsTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CausalConv1dDocsTest, DocumentsMatchSeparateRuns) {
  const auto [B, L, C, K, docs] = GetParam();
  ASSERT_TRUE(docs);
  auto x = testing::random_normal(B * L * C, 8);
  auto w = testing::random_normal(C * K, 9, 0.5);
  auto bias = testing::random_normal(C, 10);
  auto dy = testing::random_normal(B * L * C, 11);
  const auto doc = make_docs(B, L);

  std::vector<double> y(B * L * C), dx(x.size()), dw(w.size()), dbias(bias.size());
  causal_conv1d_forward(x.data(), w.data(), bias.data(), doc.data(), y.data(), B, L, C, K);
  causal_conv1d_backward(dy.data(), x.data(), w.data(), doc.data(), dx.data(), dw.data(),
                         dbias.data(), B, L, C, K);

  std::vector<double> y_sep(B * L * C), dx_sep(x.size()), dw_sep(w.size()), dbias_sep(C);
  const auto segs = segments(doc, B, L);
  ASSERT_GT(segs.size(), size_t(B)) << "the case should pack several documents in a row";
  for (const Segment& s : segs) {
    auto xs = slice(x, s, L, C), dys = slice(dy, s, L, C);
    std::vector<double> ys(xs.size()), dxs(xs.size());
    causal_conv1d_forward(xs.data(), w.data(), bias.data(), nullptr, ys.data(), 1, s.len, C, K);
    causal_conv1d_backward(dys.data(), xs.data(), w.data(), nullptr, dxs.data(), dw_sep.data(),
                           dbias_sep.data(), 1, s.len, C, K);
    std::copy(ys.begin(), ys.end(), y_sep.begin() + (s.b * L + s.start) * C);
    std::copy(dxs.begin(), dxs.end(), dx_sep.begin() + (s.b * L + s.start) * C);
  }
  EXPECT_LT(testing::relative_error(y, y_sep), 1e-14);
  EXPECT_LT(testing::relative_error(dx, dx_sep), 1e-14);
  EXPECT_LT(testing::relative_error(dw, dw_sep), 1e-13);
  EXPECT_LT(testing::relative_error(dbias, dbias_sep), 1e-13);
}

std::string case_name(const ::testing::TestParamInfo<ConvCase>& info) {
  return describe(info.param);
}

const ConvCase kDocCases[] = {{2, 11, 5, 4, true}, {1, 13, 3, 3, true}, {3, 9, 7, 4, true}};

INSTANTIATE_TEST_SUITE_P(Shapes, CausalConv1dTest,
                         ::testing::Values(ConvCase{1, 1, 1, 4, false}, ConvCase{2, 7, 3, 4, false},
                                           ConvCase{3, 6, 5, 1, false}, ConvCase{2, 3, 2, 5, false},
                                           kDocCases[0], kDocCases[1], kDocCases[2]),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Shapes, CausalConv1dDocsTest, ::testing::ValuesIn(kDocCases), case_name);

TEST(CausalConv1d, BackwardAccumulatesIntoGradients) {
  const int64_t B = 2, L = 5, C = 3, K = 4;
  auto x = testing::random_normal(B * L * C, 12);
  auto w = testing::random_normal(C * K, 13);
  auto dy = testing::random_normal(B * L * C, 14);
  std::vector<double> dx1(x.size()), dw1(w.size()), db1(C);
  causal_conv1d_backward(dy.data(), x.data(), w.data(), nullptr, dx1.data(), dw1.data(), db1.data(),
                         B, L, C, K);
  std::vector<double> dx2 = dx1, dw2 = dw1, db2 = db1;
  causal_conv1d_backward(dy.data(), x.data(), w.data(), nullptr, dx2.data(), dw2.data(), db2.data(),
                         B, L, C, K);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);
  for (size_t i = 0; i < db1.size(); ++i) EXPECT_DOUBLE_EQ(db2[i], 2 * db1[i]);
}

// Threads split dx by token and dweight/dbias by channel block; any thread count gives the same
// sums in the same order. C spans several channel blocks.
TEST(CausalConv1d, BackwardIndependentOfThreadCount) {
  const int64_t B = 2, L = 9, C = 150, K = 4;
  auto x = testing::random_normal(B * L * C, 23);
  auto w = testing::random_normal(C * K, 24);
  auto dy = testing::random_normal(B * L * C, 25);
  const auto doc = make_docs(B, L);
  const int saved = omp_get_max_threads();
  std::vector<double> dx1(x.size()), dw1(w.size()), db1(C), dx4(x.size()), dw4(w.size()), db4(C);
  omp_set_num_threads(1);
  causal_conv1d_backward(dy.data(), x.data(), w.data(), doc.data(), dx1.data(), dw1.data(),
                         db1.data(), B, L, C, K);
  omp_set_num_threads(4);
  causal_conv1d_backward(dy.data(), x.data(), w.data(), doc.data(), dx4.data(), dw4.data(),
                         db4.data(), B, L, C, K);
  omp_set_num_threads(saved);
  EXPECT_EQ(dx4, dx1);
  EXPECT_EQ(dw4, dw1);
  EXPECT_EQ(db4, db1);
}

// The last tap multiplies the token itself, so a one-hot kernel there is the identity plus bias,
// with and without documents.
TEST(CausalConv1d, OneHotLastTapIsBiasPlusX) {
  const int64_t B = 2, L = 9, C = 4, K = 4;
  auto x = testing::random_normal(B * L * C, 15);
  auto bias = testing::random_normal(C, 16);
  std::vector<double> w(C * K, 0.0);
  for (int64_t c = 0; c < C; ++c) w[c * K + K - 1] = 1.0;
  const auto doc = make_docs(B, L);
  for (const int32_t* d : {static_cast<const int32_t*>(nullptr), doc.data()}) {
    std::vector<double> y(B * L * C);
    causal_conv1d_forward(x.data(), w.data(), bias.data(), d, y.data(), B, L, C, K);
    for (int64_t i = 0; i < B * L * C; ++i) EXPECT_DOUBLE_EQ(y[i], bias[i % C] + x[i]);
  }
}

// At t < K-1 the window hangs over the row start: only the taps that land on tokens 0..t count.
// Checked against the sum written out term by term, and against padding the row with K-1 zeros.
TEST(CausalConv1d, EarlyTokensSeeOnlyAvailableInputs) {
  const int64_t L = 7, C = 3, K = 4;
  auto x = testing::random_normal(L * C, 17);
  auto w = testing::random_normal(C * K, 18);
  auto bias = testing::random_normal(C, 19);
  std::vector<double> y(L * C);
  causal_conv1d_forward(x.data(), w.data(), bias.data(), nullptr, y.data(), 1, L, C, K);

  for (int64_t t = 0; t < K - 1; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double expected = bias[c];
      for (int64_t k = K - 1 - t; k < K; ++k)
        expected += w[c * K + k] * x[(t - (K - 1) + k) * C + c];
      EXPECT_NEAR(y[t * C + c], expected, 1e-14) << "t=" << t << " c=" << c;
    }

  const int64_t Lp = L + K - 1;
  std::vector<double> xp(Lp * C, 0.0), yp(Lp * C);
  std::copy(x.begin(), x.end(), xp.begin() + (K - 1) * C);
  causal_conv1d_forward(xp.data(), w.data(), bias.data(), nullptr, yp.data(), 1, Lp, C, K);
  for (int64_t i = 0; i < L * C; ++i) EXPECT_NEAR(y[i], yp[(K - 1) * C + i], 1e-14);
}

// Changing a token changes no output before it.
TEST(CausalConv1d, IsCausal) {
  const int64_t L = 8, C = 2, K = 4, changed = 5;
  auto x = testing::random_normal(L * C, 20);
  auto w = testing::random_normal(C * K, 21);
  auto bias = testing::random_normal(C, 22);
  std::vector<double> y(L * C), y2(L * C);
  causal_conv1d_forward(x.data(), w.data(), bias.data(), nullptr, y.data(), 1, L, C, K);
  for (int64_t c = 0; c < C; ++c) x[changed * C + c] += 1.0;
  causal_conv1d_forward(x.data(), w.data(), bias.data(), nullptr, y2.data(), 1, L, C, K);
  for (int64_t i = 0; i < changed * C; ++i) EXPECT_EQ(y[i], y2[i]);
  for (int64_t c = 0; c < C; ++c) EXPECT_NE(y[changed * C + c], y2[changed * C + c]);
}

TEST(CausalConv1d, RejectsBadShape) {
  std::vector<double> v(4);
  EXPECT_THROW(causal_conv1d_forward(v.data(), v.data(), v.data(), nullptr, v.data(), 1, 2, 2, 0),
               Error);
}

}  // namespace
}  // namespace sambay
