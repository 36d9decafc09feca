#include "kernels/diff_attention.h"
#include "tests/test_util.h"

#include "core/check.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>

namespace sambay {
namespace {

using testing::GradInput;

struct DiffCase {
  int64_t B, L, H, G, h, window;
  bool doc;
};

std::string name_of(const DiffCase& c) {
  return fmt::format("B{}_L{}_H{}_G{}_h{}_{}{}", c.B, c.L, c.H, c.G, c.h,
                     c.window ? fmt::format("w{}", c.window) : "full", c.doc ? "_doc" : "");
}
void PrintTo(const DiffCase& c, std::ostream* os) { *os << name_of(c); }

// Contiguous documents with boundaries that differ per batch row (as in test_attention.cpp).
std::vector<int32_t> make_docs(int64_t B, int64_t L) {
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      doc[b * L + t] = (t >= (L + b) / 3) + (t >= 2 * L / 3 + b % 2);
  return doc;
}

// The buffers forward fills for backward, sized by diff_attention_saved_sizes.
template <typename T>
struct SavedBuffers {
  double lambda = 0;
  std::vector<T> a1, a2, lse1, lse2, rstd;
  explicit SavedBuffers(const DiffAttentionShape& s) {
    const DiffAttentionSavedSizes n = diff_attention_saved_sizes(s);
    a1.resize(n.a1), a2.resize(n.a2), lse1.resize(n.lse1), lse2.resize(n.lse2);
    rstd.resize(n.rstd);
  }
  DiffAttentionSaved view() {
    return {&lambda, a1.data(), a2.data(), lse1.data(), lse2.data(), rstd.data()};
  }
};

constexpr double kEps = 1e-5;

// Inputs and parameters of one differential attention layer, in double. Lk and q_offset as in
// DiffAttentionShape: the c.L queries may be a slice of more keys.
struct DiffData {
  DiffAttentionShape s;
  double scale, lambda_init;
  std::vector<double> q, k, v, lq1, lk1, lq2, lk2, norm_weight, out, probe;
  std::vector<int32_t> doc;
  SavedBuffers<double> saved;

  DiffData(const DiffCase& c, uint64_t seed, int64_t Lk = 0, int64_t q_offset = 0)
      : s{c.B, c.L, c.H, c.G, c.h, c.window, Lk, q_offset},
        scale(1.0 / std::sqrt(c.h)),
        lambda_init(0.8 - 0.6 * std::exp(-0.3 * 3)),  // the model's value at layer 3
        saved(s) {
    const int64_t keys = Lk ? Lk : c.L;
    q = testing::random_normal(c.B * c.L * c.H * c.h, seed + 1);
    k = testing::random_normal(c.B * keys * c.G * c.h, seed + 2);
    v = testing::random_normal(c.B * keys * c.G * c.h, seed + 3);
    lq1 = testing::random_normal(c.h, seed + 4, 0.3);
    lk1 = testing::random_normal(c.h, seed + 5, 0.3);
    lq2 = testing::random_normal(c.h, seed + 6, 0.3);
    lk2 = testing::random_normal(c.h, seed + 7, 0.3);
    norm_weight = testing::random_uniform(2 * c.h, seed + 8, 0.5, 1.5);
    probe = testing::random_normal(c.B * c.L * c.H * c.h, seed + 9);
    out.resize(probe.size());
    if (c.doc) doc = make_docs(c.B, keys);
  }
  const int32_t* doc_ptr() const { return doc.empty() ? nullptr : doc.data(); }
  void forward() {
    diff_attention_forward(q.data(), k.data(), v.data(), doc_ptr(), lq1.data(), lk1.data(),
                           lq2.data(), lk2.data(), lambda_init, norm_weight.data(), out.data(),
                           saved.view(), s, scale, kEps);
  }
  struct Grads {
    std::vector<double> dq, dk, dv, dlq1, dlk1, dlq2, dlk2, dnorm_weight;
  };
  // Gradients of dot(out, probe), added into `g` (fresh zeroed buffers when omitted).
  void backward(Grads& g) {
    diff_attention_backward(probe.data(), q.data(), k.data(), v.data(), doc_ptr(), lq1.data(),
                            lk1.data(), lq2.data(), lk2.data(), lambda_init, norm_weight.data(),
                            saved.view(), g.dq.data(), g.dk.data(), g.dv.data(), g.dlq1.data(),
                            g.dlk1.data(), g.dlq2.data(), g.dlk2.data(), g.dnorm_weight.data(), s,
                            scale);
  }
  Grads backward() {
    Grads g{std::vector<double>(q.size()),   std::vector<double>(k.size()),
            std::vector<double>(v.size()),   std::vector<double>(s.h),
            std::vector<double>(s.h),        std::vector<double>(s.h),
            std::vector<double>(s.h),        std::vector<double>(2 * s.h)};
    backward(g);
    return g;
  }
};

double lambda_formula(const DiffData& d) {
  double a = 0, b = 0;
  for (int64_t i = 0; i < d.s.h; ++i) a += d.lq1[i] * d.lk1[i], b += d.lq2[i] * d.lk2[i];
  return std::exp(a) - std::exp(b) + d.lambda_init;
}

// A plain re-implementation from the formula of docs/model.md with a given lambda: two explicit
// L x L softmax maps per differential head, v = concat(v_2j, v_2j+1), RMSNorm, output split.
std::vector<double> naive_diff_attention(const DiffData& d, double lambda) {
  const DiffAttentionShape& s = d.s;
  const int64_t L = s.L, H = s.H, G = s.G, h = s.h;
  const int32_t* doc = d.doc_ptr();
  auto index = [&](int64_t heads, int64_t b, int64_t t, int64_t head, int64_t c) {
    return ((b * L + t) * heads + head) * h + c;
  };
  std::vector<double> out(s.B * L * H * h);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t i = 0; i < H / 2; ++i) {
      const int64_t j = i * G / H;
      std::vector<double> map[2];
      for (int m = 0; m < 2; ++m) {
        map[m].assign(L * L, 0.0);
        for (int64_t t = 0; t < L; ++t) {
          std::vector<double> score(L, -INFINITY);
          for (int64_t u = 0; u <= t; ++u) {
            if (s.window > 0 && t - u >= s.window) continue;
            if (doc && doc[b * L + u] != doc[b * L + t]) continue;
            double dot = 0;
            for (int64_t c = 0; c < h; ++c)
              dot += d.q[index(H, b, t, 2 * i + m, c)] * d.k[index(G, b, u, 2 * j + m, c)];
            score[u] = d.scale * dot;
          }
          double sum = 0;
          for (int64_t u = 0; u < L; ++u) sum += std::exp(score[u]);
          for (int64_t u = 0; u < L; ++u) map[m][t * L + u] = std::exp(score[u]) / sum;
        }
      }
      for (int64_t t = 0; t < L; ++t) {
        std::vector<double> o(2 * h, 0.0);
        for (int64_t c = 0; c < 2 * h; ++c)
          for (int64_t u = 0; u < L; ++u)
            o[c] += (map[0][t * L + u] - lambda * map[1][t * L + u]) *
                    d.v[index(G, b, u, 2 * j + c / h, c % h)];
        double mean_sq = 0;
        for (double x : o) mean_sq += x * x / (2 * h);
        const double rstd = 1.0 / std::sqrt(mean_sq + kEps);
        for (int64_t c = 0; c < 2 * h; ++c)
          out[index(H, b, t, 2 * i + c / h, c % h)] =
              o[c] * rstd * d.norm_weight[c] * (1 - d.lambda_init);
      }
    }
  return out;
}

class DiffAttentionTest : public ::testing::TestWithParam<DiffCase> {};

TEST_P(DiffAttentionTest, GradientsMatchFiniteDifferences) {
  DiffData d(GetParam(), 100);
  auto loss = [&] {
    d.forward();
    return testing::dot(d.out, d.probe);
  };
  loss();
  auto g = d.backward();
  testing::expect_gradients_match(
      loss, {{"q", &d.q, &g.dq},
             {"k", &d.k, &g.dk},
             {"v", &d.v, &g.dv},
             {"lambda_q1", &d.lq1, &g.dlq1},
             {"lambda_k1", &d.lk1, &g.dlk1},
             {"lambda_q2", &d.lq2, &g.dlq2},
             {"lambda_k2", &d.lk2, &g.dlk2},
             {"norm_weight", &d.norm_weight, &g.dnorm_weight}});
}

TEST_P(DiffAttentionTest, Float32MatchesFloat64) {
  DiffData d(GetParam(), 200);
  d.forward();
  using testing::to_f32;
  auto q = to_f32(d.q), k = to_f32(d.k), v = to_f32(d.v), lq1 = to_f32(d.lq1),
       lk1 = to_f32(d.lk1), lq2 = to_f32(d.lq2), lk2 = to_f32(d.lk2), w = to_f32(d.norm_weight);
  std::vector<float> out(d.out.size());
  SavedBuffers<float> saved(d.s);
  diff_attention_forward(q.data(), k.data(), v.data(), d.doc_ptr(), lq1.data(), lk1.data(),
                         lq2.data(), lk2.data(), static_cast<float>(d.lambda_init), w.data(),
                         out.data(), saved.view(), d.s, static_cast<float>(d.scale),
                         static_cast<float>(kEps));
  EXPECT_LT(testing::relative_error(out, d.out), 1e-5);
  EXPECT_LT(std::abs(saved.lambda - d.saved.lambda), 1e-6 * std::abs(d.saved.lambda));
}

// With lq1 = lk1 = lq2 = lk2 = 0, lambda = e^0 - e^0 + lambda_init = lambda_init exactly.
TEST_P(DiffAttentionTest, ZeroLambdaVectorsMatchPlainReimplementation) {
  DiffData d(GetParam(), 300);
  for (auto* x : {&d.lq1, &d.lk1, &d.lq2, &d.lk2}) x->assign(d.s.h, 0.0);
  d.forward();
  EXPECT_EQ(d.saved.lambda, d.lambda_init);
  EXPECT_LT(testing::relative_error(d.out, naive_diff_attention(d, d.lambda_init)), 1e-13);
}

TEST_P(DiffAttentionTest, LambdaFormulaAndPlainReimplementation) {
  DiffData d(GetParam(), 400);
  d.forward();
  const double lambda = lambda_formula(d);
  EXPECT_NEAR(d.saved.lambda, lambda, 1e-15 * std::abs(lambda));
  EXPECT_LT(testing::relative_error(d.out, naive_diff_attention(d, lambda)), 1e-13);
}

TEST_P(DiffAttentionTest, BackwardAccumulatesIntoGradients) {
  DiffData d(GetParam(), 500);
  d.forward();
  auto g = d.backward();
  auto g2 = g;
  d.backward(g2);
  auto expect_doubled = [](const std::vector<double>& once, const std::vector<double>& twice) {
    for (size_t i = 0; i < once.size(); ++i) EXPECT_DOUBLE_EQ(twice[i], 2 * once[i]);
  };
  expect_doubled(g.dq, g2.dq), expect_doubled(g.dk, g2.dk), expect_doubled(g.dv, g2.dv);
  expect_doubled(g.dlq1, g2.dlq1), expect_doubled(g.dlk1, g2.dlk1);
  expect_doubled(g.dlq2, g2.dlq2), expect_doubled(g.dlk2, g2.dlk2);
  expect_doubled(g.dnorm_weight, g2.dnorm_weight);
  // Null gradient pointers skip only those gradients.
  std::vector<double> dk(d.k.size()), dlq2(d.s.h);
  diff_attention_backward<double>(d.probe.data(), d.q.data(), d.k.data(), d.v.data(),
                                  d.doc_ptr(), d.lq1.data(), d.lk1.data(), d.lq2.data(),
                                  d.lk2.data(), d.lambda_init, d.norm_weight.data(),
                                  d.saved.view(), nullptr, dk.data(), nullptr, nullptr, nullptr,
                                  dlq2.data(), nullptr, nullptr, d.s, d.scale);
  EXPECT_EQ(dk, g.dk);
  EXPECT_EQ(dlq2, g.dlq2);
}

// Positions [t0, t1) of every batch row of a [B, L, width] tensor, and the inverse.
std::vector<double> take(const std::vector<double>& x, int64_t B, int64_t L, int64_t width,
                         int64_t t0, int64_t t1) {
  std::vector<double> part(B * (t1 - t0) * width);
  for (int64_t b = 0; b < B; ++b)
    std::copy(x.begin() + (b * L + t0) * width, x.begin() + (b * L + t1) * width,
              part.begin() + b * (t1 - t0) * width);
  return part;
}
void put(const std::vector<double>& part, std::vector<double>& x, int64_t B, int64_t L,
         int64_t width, int64_t t0, int64_t t1) {
  for (int64_t b = 0; b < B; ++b)
    std::copy(part.begin() + b * (t1 - t0) * width, part.begin() + (b + 1) * (t1 - t0) * width,
              x.begin() + (b * L + t0) * width);
}

// Context parallelism: the queries cut into 2 or 4 slices, each run against all the keys (Lk =
// L, q_offset = the slice's start), give the whole sequence's out exactly and, summed over the
// slices, its gradients (the sums' order differs).
TEST_P(DiffAttentionTest, QuerySlicesMatchWholeSequence) {
  for (bool doc : {false, true}) {
    DiffCase c = GetParam();
    c.doc = doc;
    DiffData d(c, 600);
    d.forward();
    const auto g = d.backward();
    const DiffAttentionShape& s = d.s;
    const int64_t width = s.H * s.h;  // q, out and probe per position
    for (int64_t slices : {2, 4}) {
      if (slices > s.L) continue;
      std::vector<double> out(d.out.size()), dq(d.q.size());
      // dq is the slice's own; every other gradient adds up over the slices.
      DiffData::Grads sum{{},
                          std::vector<double>(d.k.size()),
                          std::vector<double>(d.v.size()),
                          std::vector<double>(s.h),
                          std::vector<double>(s.h),
                          std::vector<double>(s.h),
                          std::vector<double>(s.h),
                          std::vector<double>(2 * s.h)};
      for (int64_t r = 0; r < slices; ++r) {
        const int64_t t0 = r * s.L / slices, t1 = (r + 1) * s.L / slices;
        DiffCase pc = c;
        pc.L = t1 - t0;
        DiffData part(pc, 0, s.L, t0);
        part.q = take(d.q, s.B, s.L, width, t0, t1);
        part.probe = take(d.probe, s.B, s.L, width, t0, t1);
        part.k = d.k, part.v = d.v, part.doc = d.doc;
        part.lq1 = d.lq1, part.lk1 = d.lk1, part.lq2 = d.lq2, part.lk2 = d.lk2;
        part.norm_weight = d.norm_weight;
        part.forward();
        put(part.out, out, s.B, s.L, width, t0, t1);
        sum.dq.assign(part.q.size(), 0.0);
        part.backward(sum);
        put(sum.dq, dq, s.B, s.L, width, t0, t1);
      }
      const std::string what = fmt::format("{} slices{}", slices, doc ? " with docs" : "");
      EXPECT_EQ(out, d.out) << what;
      using Pair = std::pair<const std::vector<double>*, const std::vector<double>*>;
      const std::pair<const char*, Pair> grads[] = {
          {"q", {&dq, &g.dq}},
          {"k", {&sum.dk, &g.dk}},
          {"v", {&sum.dv, &g.dv}},
          {"lambda_q1", {&sum.dlq1, &g.dlq1}},
          {"lambda_k1", {&sum.dlk1, &g.dlk1}},
          {"lambda_q2", {&sum.dlq2, &g.dlq2}},
          {"lambda_k2", {&sum.dlk2, &g.dlk2}},
          {"norm_weight", {&sum.dnorm_weight, &g.dnorm_weight}}};
      // Errors against a norm of at least 1: lambda's gradient can cancel to almost nothing
      // (a query that sees only its own key has o = (1 - lambda) v, whose norm removes lambda).
      for (const auto& [name, pair] : grads) {
        double err = 0, ref = 0;
        for (size_t i = 0; i < pair.second->size(); ++i) {
          err += std::pow((*pair.first)[i] - (*pair.second)[i], 2);
          ref += std::pow((*pair.second)[i], 2);
        }
        EXPECT_LT(std::sqrt(err), 1e-13 * std::max(1.0, std::sqrt(ref)))
            << "gradient of " << name << ", " << what;
      }
    }
  }
}

// Finite differences in the slice mode: the L queries stand at positions 3 .. L + 2 of L + 4
// keys, so some keys precede the slice and one follows it.
TEST_P(DiffAttentionTest, QuerySliceGradientsMatchFiniteDifferences) {
  const DiffCase c = GetParam();
  DiffData d(c, 700, c.L + 4, 3);
  auto loss = [&] {
    d.forward();
    return testing::dot(d.out, d.probe);
  };
  loss();
  auto g = d.backward();
  testing::expect_gradients_match(
      loss, {{"q", &d.q, &g.dq},
             {"k", &d.k, &g.dk},
             {"v", &d.v, &g.dv},
             {"lambda_q1", &d.lq1, &g.dlq1},
             {"lambda_k1", &d.lk1, &g.dlk1},
             {"lambda_q2", &d.lq2, &g.dlq2},
             {"lambda_k2", &d.lk2, &g.dlk2},
             {"norm_weight", &d.norm_weight, &g.dnorm_weight}});
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DiffAttentionTest,
    ::testing::Values(DiffCase{1, 2, 2, 2, 2, 0, false},  // smallest: one pair, two tokens
                      DiffCase{2, 5, 2, 2, 3, 0, true},   // GQA 1, full, odd L
                      DiffCase{1, 7, 4, 2, 2, 3, false},  // GQA 2, L > window
                      DiffCase{2, 6, 4, 2, 3, 6, true},   // GQA 2, L = window
                      DiffCase{1, 5, 2, 2, 2, 8, false},  // GQA 1, L < window
                      DiffCase{1, 9, 4, 2, 2, 4, true},   // GQA 2, L > window, odd L
                      DiffCase{1, 7, 4, 4, 2, 2, true},   // GQA 1, two pairs, window 2
                      DiffCase{1, 6, 8, 4, 2, 0, false}), // GQA 2, four pairs, full
    [](const auto& info) { return name_of(info.param); });

TEST(DiffAttention, SavedSizes) {
  const DiffAttentionSavedSizes n = diff_attention_saved_sizes({2, 5, 8, 4, 3, 0});
  const int64_t rows = 2 * 5 * 4;  // B * L * H/2
  EXPECT_EQ(n.a1, rows * 6);
  EXPECT_EQ(n.a2, rows * 6);
  EXPECT_EQ(n.lse1, rows);
  EXPECT_EQ(n.lse2, rows);
  EXPECT_EQ(n.rstd, rows);
}

TEST(DiffAttention, RejectsBadShapes) {
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 3, 3, 2, 0}), Error);  // odd head counts
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 4, 6, 2, 0}), Error);  // H not a multiple of G
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 2, 2, 2, -1}), Error); // negative window
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 2, 2, 2, 0, 5, 2}), Error);  // [2, 6) past 5 keys
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 2, 2, 2, 0, 0, 1}), Error);  // Lk 0 means L
  EXPECT_THROW(diff_attention_saved_sizes({1, 4, 2, 2, 2, 0, 6, -1}), Error); // negative offset
  EXPECT_NO_THROW(diff_attention_saved_sizes({1, 4, 2, 2, 2, 0, 6, 2}));      // [2, 6) of 6 keys
}

}  // namespace
}  // namespace sambay
