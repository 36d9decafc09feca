#include "kernels/attention.h"
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

struct AttnCase {
  int64_t B, L, H, G, dk, dv, window;
  bool doc;
};

std::string name_of(const AttnCase& c) {
  return fmt::format("B{}_L{}_H{}_G{}_dk{}_dv{}_{}{}", c.B, c.L, c.H, c.G, c.dk, c.dv,
                     c.window ? fmt::format("w{}", c.window) : "full", c.doc ? "_doc" : "");
}
void PrintTo(const AttnCase& c, std::ostream* os) { *os << name_of(c); }

AttentionShape shape_of(const AttnCase& c) {
  return {c.B, c.L, c.H, c.G, c.dk, c.dv, c.window};
}

// Contiguous documents whose boundaries differ between batch rows (so doc masking cuts windows
// at different places): ids 0, 1, 2 starting at t = 0, (L + b) / 3 and 2L / 3 + b % 2.
std::vector<int32_t> make_docs(int64_t B, int64_t L) {
  std::vector<int32_t> doc(B * L);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      doc[b * L + t] = (t >= (L + b) / 3) + (t >= 2 * L / 3 + b % 2);
  return doc;
}

// Everything one attention call reads and writes, in double, from reproducible random data.
// Lk and q_offset as in AttentionShape: the c.L queries may be a slice of more keys.
struct AttnData {
  AttentionShape s;
  double scale;
  std::vector<double> q, k, v, out, lse, probe;
  std::vector<int32_t> doc;

  AttnData(const AttnCase& c, uint64_t seed, int64_t Lk = 0, int64_t q_offset = 0)
      : s(shape_of(c)), scale(1.0 / std::sqrt(c.dk)) {
    s.Lk = Lk, s.q_offset = q_offset;
    const int64_t keys = attention_keys(s);
    q = testing::random_normal(c.B * c.L * c.H * c.dk, seed + 1);
    k = testing::random_normal(c.B * keys * c.G * c.dk, seed + 2);
    v = testing::random_normal(c.B * keys * c.G * c.dv, seed + 3);
    probe = testing::random_normal(c.B * c.L * c.H * c.dv, seed + 4);
    out.resize(probe.size());
    lse.resize(c.B * c.H * c.L);
    if (c.doc) doc = make_docs(c.B, keys);
  }
  const int32_t* doc_ptr() const { return doc.empty() ? nullptr : doc.data(); }
  void forward() {
    attention_forward(q.data(), k.data(), v.data(), doc_ptr(), out.data(), lse.data(), s, scale);
  }
  // Gradients of dot(out, probe), added into fresh zeroed buffers.
  struct Grads {
    std::vector<double> dq, dk, dv;
  };
  Grads backward() const {
    Grads g{std::vector<double>(q.size()), std::vector<double>(k.size()),
            std::vector<double>(v.size())};
    attention_backward(probe.data(), q.data(), k.data(), v.data(), doc_ptr(), out.data(),
                       lse.data(), g.dq.data(), g.dk.data(), g.dv.data(), s, scale);
    return g;
  }
};

// The plain reference: multi-head attention (G == H) with an explicit L x L score matrix and an
// explicit mask, softmax over each row.
void naive_mha(const std::vector<double>& q, const std::vector<double>& k,
               const std::vector<double>& v, const int32_t* doc, std::vector<double>& out,
               std::vector<double>& lse, const AttentionShape& s, double scale) {
  ASSERT_EQ(s.H, s.G);
  const int64_t L = s.L, H = s.H;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> score(L * L);
      std::vector<bool> mask(L * L);
      for (int64_t t = 0; t < L; ++t)
        for (int64_t j = 0; j < L; ++j) {
          const bool causal = j <= t;
          const bool in_window = s.window == 0 || t - j < s.window;
          const bool same_doc = !doc || doc[b * L + j] == doc[b * L + t];
          mask[t * L + j] = causal && in_window && same_doc;
          double dot = 0;
          for (int64_t c = 0; c < s.dk; ++c)
            dot += q[((b * L + t) * H + h) * s.dk + c] * k[((b * L + j) * H + h) * s.dk + c];
          score[t * L + j] = scale * dot;
        }
      for (int64_t t = 0; t < L; ++t) {
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j < L; ++j)
          if (mask[t * L + j]) m = std::max(m, score[t * L + j]);
        for (int64_t j = 0; j < L; ++j)
          if (mask[t * L + j]) sum += std::exp(score[t * L + j] - m);
        lse[(b * H + h) * L + t] = m + std::log(sum);
        for (int64_t c = 0; c < s.dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < L; ++j)
            if (mask[t * L + j])
              acc += std::exp(score[t * L + j] - m) / sum * v[((b * L + j) * H + h) * s.dv + c];
          out[((b * L + t) * H + h) * s.dv + c] = acc;
        }
      }
    }
}

// x [B, L, G, d] -> [B, L, H, d] with query head h holding kv head h / (H / G).
std::vector<double> repeat_kv(const std::vector<double>& x, const AttentionShape& s, int64_t d) {
  std::vector<double> y(s.B * s.L * s.H * d);
  const int64_t group = s.H / s.G;
  for (int64_t r = 0; r < s.B * s.L; ++r)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t c = 0; c < d; ++c) y[(r * s.H + h) * d + c] = x[(r * s.G + h / group) * d + c];
  return y;
}

// The adjoint of repeat_kv: sum each group's gradients back onto its kv head.
std::vector<double> sum_groups(const std::vector<double>& y, const AttentionShape& s, int64_t d) {
  std::vector<double> x(s.B * s.L * s.G * d);
  const int64_t group = s.H / s.G;
  for (int64_t r = 0; r < s.B * s.L; ++r)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t c = 0; c < d; ++c) x[(r * s.G + h / group) * d + c] += y[(r * s.H + h) * d + c];
  return x;
}

class AttentionTest : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTest, GradientsMatchFiniteDifferences) {
  AttnData a(GetParam(), 10);
  auto loss = [&] {
    a.forward();
    return testing::dot(a.out, a.probe);
  };
  loss();
  auto g = a.backward();
  std::vector<GradInput> inputs = {{"v", &a.v, &g.dv}};
  // When every query sees only its own key (L = 1 or w = 1) the softmax is constantly 1 and the
  // q/k gradients are exactly zero (WindowOneCopiesOwnValue checks that); otherwise check them.
  if (a.s.L > 1 && a.s.window != 1) {
    inputs.push_back({"q", &a.q, &g.dq});
    inputs.push_back({"k", &a.k, &g.dk});
  }
  testing::expect_gradients_match(loss, inputs);
}

TEST_P(AttentionTest, Float32MatchesFloat64) {
  AttnData a(GetParam(), 20);
  a.forward();
  auto g = a.backward();
  auto qf = testing::to_f32(a.q), kf = testing::to_f32(a.k), vf = testing::to_f32(a.v);
  auto pf = testing::to_f32(a.probe);
  std::vector<float> outf(a.out.size()), lsef(a.lse.size());
  const float scale = static_cast<float>(a.scale);
  attention_forward(qf.data(), kf.data(), vf.data(), a.doc_ptr(), outf.data(), lsef.data(), a.s,
                    scale);
  EXPECT_LT(testing::relative_error(outf, a.out), 1e-5);
  EXPECT_LT(testing::relative_error(lsef, a.lse), 1e-5);
  std::vector<float> dqf(qf.size()), dkf(kf.size()), dvf(vf.size());
  attention_backward(pf.data(), qf.data(), kf.data(), vf.data(), a.doc_ptr(), outf.data(),
                     lsef.data(), dqf.data(), dkf.data(), dvf.data(), a.s, scale);
  EXPECT_LT(testing::relative_error(dqf, g.dq), 1e-5);
  EXPECT_LT(testing::relative_error(dkf, g.dk), 1e-5);
  EXPECT_LT(testing::relative_error(dvf, g.dv), 1e-5);
}

// GQA forward equals the naive MHA reference run on k/v repeated per query head (for G == H the
// repeat is the identity, so this is also "GQA with G = H is plain MHA").
TEST_P(AttentionTest, MatchesNaiveReference) {
  AttnData a(GetParam(), 30);
  a.forward();
  AttentionShape mha = a.s;
  mha.G = mha.H;
  std::vector<double> out(a.out.size()), lse(a.lse.size());
  naive_mha(a.q, repeat_kv(a.k, a.s, a.s.dk), repeat_kv(a.v, a.s, a.s.dv), a.doc_ptr(), out, lse,
            mha, a.scale);
  EXPECT_LT(testing::relative_error(a.out, out), 1e-13);
  EXPECT_LT(testing::relative_error(a.lse, lse), 1e-13);
}

// Backward of GQA equals backward of MHA on repeated k/v, with dk/dv summed over each group.
TEST_P(AttentionTest, GqaBackwardEqualsMhaOnRepeatedKv) {
  AttnData a(GetParam(), 40);
  a.forward();
  auto g = a.backward();
  AttnCase mc = GetParam();
  mc.G = mc.H;
  AttnData m(mc, 40);
  m.q = a.q, m.probe = a.probe;
  m.k = repeat_kv(a.k, a.s, a.s.dk);
  m.v = repeat_kv(a.v, a.s, a.s.dv);
  m.forward();
  auto mg = m.backward();
  EXPECT_LT(testing::relative_error(g.dq, mg.dq), 1e-13);
  EXPECT_LT(testing::relative_error(g.dk, sum_groups(mg.dk, a.s, a.s.dk)), 1e-13);
  EXPECT_LT(testing::relative_error(g.dv, sum_groups(mg.dv, a.s, a.s.dv)), 1e-13);
}

TEST_P(AttentionTest, WindowCoveringSequenceEqualsFull) {
  AttnCase full_case = GetParam();
  full_case.window = 0;
  AttnData full(full_case, 50);
  full.forward();
  auto fg = full.backward();
  for (int64_t window : {full_case.L, full_case.L + 3}) {
    AttnCase wc = full_case;
    wc.window = window;
    AttnData w(wc, 50);
    w.forward();
    auto wg = w.backward();
    EXPECT_LT(testing::relative_error(w.out, full.out), 1e-15) << "window " << window;
    EXPECT_LT(testing::relative_error(w.lse, full.lse), 1e-15) << "window " << window;
    EXPECT_LT(testing::relative_error(wg.dq, fg.dq), 1e-15) << "window " << window;
    EXPECT_LT(testing::relative_error(wg.dk, fg.dk), 1e-15) << "window " << window;
    EXPECT_LT(testing::relative_error(wg.dv, fg.dv), 1e-15) << "window " << window;
  }
}

// With w = 1 each query sees only its own key: out = v of its kv head, lse = its own score, and
// the softmax is constant, so dq = dk = 0 and dv sums dout over the group.
TEST_P(AttentionTest, WindowOneCopiesOwnValue) {
  AttnCase c = GetParam();
  c.window = 1;
  AttnData a(c, 60);
  a.forward();
  auto g = a.backward();
  const AttentionShape& s = a.s;
  const int64_t group = s.H / s.G;
  std::vector<double> want_out(a.out.size()), want_lse(a.lse.size()), want_dv(a.v.size());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t t = 0; t < s.L; ++t)
      for (int64_t h = 0; h < s.H; ++h) {
        const int64_t r = b * s.L + t, g_h = h / group;
        double score = 0;
        for (int64_t i = 0; i < s.dk; ++i)
          score += a.q[(r * s.H + h) * s.dk + i] * a.k[(r * s.G + g_h) * s.dk + i];
        want_lse[(b * s.H + h) * s.L + t] = a.scale * score;
        for (int64_t i = 0; i < s.dv; ++i) {
          want_out[(r * s.H + h) * s.dv + i] = a.v[(r * s.G + g_h) * s.dv + i];
          want_dv[(r * s.G + g_h) * s.dv + i] += a.probe[(r * s.H + h) * s.dv + i];
        }
      }
  EXPECT_LT(testing::relative_error(a.out, want_out), 1e-15);
  EXPECT_LT(testing::relative_error(a.lse, want_lse), 1e-15);
  EXPECT_LT(testing::relative_error(g.dv, want_dv), 1e-15);
  for (double x : g.dq) EXPECT_NEAR(x, 0.0, 1e-14);
  for (double x : g.dk) EXPECT_NEAR(x, 0.0, 1e-14);
}

// Doc masking equals running each document of each batch row as its own sequence.
TEST_P(AttentionTest, DocMaskingEqualsSeparateDocuments) {
  AttnCase c = GetParam();
  c.doc = true;
  AttnData a(c, 70);
  a.forward();
  auto g = a.backward();
  const AttentionShape& s = a.s;
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t start = 0; start < s.L;) {
      int64_t end = start;
      while (end < s.L && a.doc[b * s.L + end] == a.doc[b * s.L + start]) ++end;
      AttnCase dc = c;
      dc.B = 1, dc.L = end - start, dc.doc = false;
      AttnData d(dc, 0);
      // Copy rows [start, end) of batch row b: q/k/v/probe rows are contiguous per position.
      auto slice = [&](const std::vector<double>& x, int64_t width) {
        auto first = x.begin() + (b * s.L + start) * width;
        return std::vector<double>(first, first + (end - start) * width);
      };
      d.q = slice(a.q, s.H * s.dk), d.k = slice(a.k, s.G * s.dk), d.v = slice(a.v, s.G * s.dv);
      d.probe = slice(a.probe, s.H * s.dv);
      d.forward();
      auto dg = d.backward();
      EXPECT_LT(testing::relative_error(slice(a.out, s.H * s.dv), d.out), 1e-15);
      EXPECT_LT(testing::relative_error(slice(g.dq, s.H * s.dk), dg.dq), 1e-15);
      EXPECT_LT(testing::relative_error(slice(g.dk, s.G * s.dk), dg.dk), 1e-15);
      EXPECT_LT(testing::relative_error(slice(g.dv, s.G * s.dv), dg.dv), 1e-15);
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t t = start; t < end; ++t)
          EXPECT_EQ(a.lse[(b * s.H + h) * s.L + t], d.lse[h * dc.L + t - start]);
      start = end;
    }
  }
}

TEST_P(AttentionTest, BackwardAccumulatesIntoGradients) {
  AttnData a(GetParam(), 80);
  a.forward();
  auto g = a.backward();
  auto g2 = g;
  attention_backward(a.probe.data(), a.q.data(), a.k.data(), a.v.data(), a.doc_ptr(),
                     a.out.data(), a.lse.data(), g2.dq.data(), g2.dk.data(), g2.dv.data(), a.s,
                     a.scale);
  for (size_t i = 0; i < g.dq.size(); ++i) EXPECT_DOUBLE_EQ(g2.dq[i], 2 * g.dq[i]);
  for (size_t i = 0; i < g.dk.size(); ++i) EXPECT_DOUBLE_EQ(g2.dk[i], 2 * g.dk[i]);
  for (size_t i = 0; i < g.dv.size(); ++i) EXPECT_DOUBLE_EQ(g2.dv[i], 2 * g.dv[i]);
  // A null gradient pointer skips only that gradient.
  std::vector<double> dv_only(a.v.size());
  attention_backward<double>(a.probe.data(), a.q.data(), a.k.data(), a.v.data(), a.doc_ptr(),
                             a.out.data(), a.lse.data(), nullptr, nullptr, dv_only.data(), a.s,
                             a.scale);
  EXPECT_EQ(dv_only, g.dv);
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
// L, q_offset = the slice's start), give the whole sequence's out, lse and dq exactly, and its
// dk, dv once summed over the slices (the sum's order differs). Keys after a slice's last query
// are present and must be ignored.
TEST_P(AttentionTest, QuerySlicesMatchWholeSequence) {
  for (bool doc : {false, true}) {
    AttnCase c = GetParam();
    c.doc = doc;
    AttnData a(c, 100);
    a.forward();
    const auto g = a.backward();
    const AttentionShape& s = a.s;
    for (int64_t slices : {2, 4}) {
      if (slices > s.L) continue;
      std::vector<double> out(a.out.size()), lse(a.lse.size()), dq(a.q.size()), dk(a.k.size()),
          dv(a.v.size());
      for (int64_t r = 0; r < slices; ++r) {
        const int64_t t0 = r * s.L / slices, t1 = (r + 1) * s.L / slices, len = t1 - t0;
        AttentionShape part = s;
        part.L = len, part.Lk = s.L, part.q_offset = t0;
        const auto q = take(a.q, s.B, s.L, s.H * s.dk, t0, t1);
        const auto probe = take(a.probe, s.B, s.L, s.H * s.dv, t0, t1);
        std::vector<double> out_part(probe.size()), lse_part(s.B * s.H * len), dq_part(q.size());
        attention_forward(q.data(), a.k.data(), a.v.data(), a.doc_ptr(), out_part.data(),
                          lse_part.data(), part, a.scale);
        attention_backward(probe.data(), q.data(), a.k.data(), a.v.data(), a.doc_ptr(),
                           out_part.data(), lse_part.data(), dq_part.data(), dk.data(), dv.data(),
                           part, a.scale);
        put(out_part, out, s.B, s.L, s.H * s.dv, t0, t1);
        put(dq_part, dq, s.B, s.L, s.H * s.dk, t0, t1);
        put(lse_part, lse, s.B * s.H, s.L, 1, t0, t1);  // lse [B, H, L]: rows of (b, h)
      }
      const std::string what = fmt::format("{} slices{}", slices, doc ? " with docs" : "");
      EXPECT_EQ(out, a.out) << what;
      EXPECT_EQ(lse, a.lse) << what;
      EXPECT_EQ(dq, g.dq) << what;
      EXPECT_LT(testing::relative_error(dk, g.dk), 1e-14) << what;
      EXPECT_LT(testing::relative_error(dv, g.dv), 1e-14) << what;
    }
  }
}

// Finite differences in the slice mode: the L queries stand at positions 3 .. L + 2 of L + 4
// keys, so some keys precede the slice (and are cut off by the window or a document or not)
// and one follows it (no gradient).
TEST_P(AttentionTest, QuerySliceGradientsMatchFiniteDifferences) {
  const AttnCase c = GetParam();
  AttnData a(c, 110, c.L + 4, 3);
  auto loss = [&] {
    a.forward();
    return testing::dot(a.out, a.probe);
  };
  loss();
  auto g = a.backward();
  std::vector<GradInput> inputs = {{"v", &a.v, &g.dv}};
  if (a.s.window != 1) {  // w = 1: every softmax is constantly 1 (see GradientsMatch...)
    inputs.push_back({"q", &a.q, &g.dq});
    inputs.push_back({"k", &a.k, &g.dk});
  }
  testing::expect_gradients_match(loss, inputs);
  // The key after the last query gets nothing.
  const int64_t Lk = a.s.Lk, row = a.s.G * a.s.dv;
  for (int64_t b = 0; b < a.s.B; ++b)
    for (int64_t i = 0; i < row; ++i) EXPECT_EQ(g.dv[(b * Lk + Lk - 1) * row + i], 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttnCase{1, 1, 1, 1, 2, 3, 0, false}, AttnCase{2, 5, 2, 2, 3, 2, 0, true},
                      AttnCase{1, 7, 4, 2, 4, 3, 3, false}, AttnCase{2, 9, 4, 2, 3, 4, 4, true},
                      AttnCase{1, 6, 3, 1, 2, 2, 8, true}, AttnCase{2, 8, 2, 1, 3, 3, 1, false},
                      AttnCase{1, 11, 4, 4, 2, 3, 5, true}, AttnCase{1, 10, 6, 2, 3, 2, 0, false}),
    [](const auto& info) { return name_of(info.param); });

// Cross-attention: two query layers read one k/v, so both backward calls add into the same dk/dv
// and the sum must be the gradient of the sum of both losses.
TEST(Attention, SharedKvGradientsAccumulateAcrossCalls) {
  AttnData a(AttnCase{2, 7, 4, 2, 3, 2, 0, true}, 90);
  AttnData b(AttnCase{2, 7, 4, 2, 3, 2, 0, true}, 95);
  auto loss = [&] {
    b.k = a.k, b.v = a.v;  // the second layer reads the first one's k/v
    a.forward();
    b.forward();
    return testing::dot(a.out, a.probe) + testing::dot(b.out, b.probe);
  };
  loss();
  std::vector<double> dqa(a.q.size()), dqb(b.q.size()), dk(a.k.size()), dv(a.v.size());
  attention_backward(a.probe.data(), a.q.data(), a.k.data(), a.v.data(), a.doc_ptr(),
                     a.out.data(), a.lse.data(), dqa.data(), dk.data(), dv.data(), a.s, a.scale);
  attention_backward(b.probe.data(), b.q.data(), b.k.data(), b.v.data(), b.doc_ptr(),
                     b.out.data(), b.lse.data(), dqb.data(), dk.data(), dv.data(), b.s, b.scale);
  testing::expect_gradients_match(
      loss, {{"q_a", &a.q, &dqa}, {"q_b", &b.q, &dqb}, {"k", &a.k, &dk}, {"v", &a.v, &dv}});
}

TEST(Attention, RejectsBadShapes) {
  std::vector<double> x(64), lse(64);
  auto run = [&](AttentionShape s) {
    attention_forward(x.data(), x.data(), x.data(), nullptr, x.data(), lse.data(), s, 1.0);
  };
  EXPECT_THROW(run({1, 2, 3, 2, 2, 2, 0}), Error);   // H not a multiple of G
  EXPECT_THROW(run({1, 2, 2, 2, 2, 2, -1}), Error);  // negative window
  EXPECT_THROW(run({1, 2, 2, 0, 2, 2, 0}), Error);   // no kv heads
  EXPECT_THROW(run({1, 2, 2, 2, 0, 2, 0}), Error);   // empty head dim
  EXPECT_THROW(run({1, 2, 2, 2, 2, 2, 0, 3, 2}), Error);   // queries [2, 4) past 3 keys
  EXPECT_THROW(run({1, 2, 2, 2, 2, 2, 0, 0, 1}), Error);   // Lk 0 means L: [1, 3) past 2 keys
  EXPECT_THROW(run({1, 2, 2, 2, 2, 2, 0, 4, -1}), Error);  // negative offset
  EXPECT_THROW(run({1, 2, 2, 2, 2, 2, 0, -1, 0}), Error);  // negative key count
  EXPECT_NO_THROW(run({1, 2, 2, 2, 2, 2, 0, 4, 2}));       // queries [2, 4) of 4 keys
}

}  // namespace
}  // namespace sambay
