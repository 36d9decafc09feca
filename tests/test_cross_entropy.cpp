#include "kernels/cross_entropy.h"
#include "core/check.h"
#include "tests/test_util.h"

#include <fmt/format.h>

#include <cmath>
#include <string>

namespace sambay {
namespace {

using testing::GradInput;

struct XentCase {
  int64_t n, d, V, chunk;
  double logit_scale;
  int ignore_every;  // every ignore_every-th row (from row 1) gets a negative target; 0: none
};

// Targets in [0, V), with some rows ignored (-1 and -100 alternate: any negative ignores).
std::vector<int32_t> make_targets(int64_t n, int64_t V, int ignore_every, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) {
    t[i] = static_cast<int32_t>(philox_below(seed, 3, i, V));
    if (ignore_every > 0 && i % ignore_every == 1) t[i] = (i / ignore_every) % 2 ? -100 : -1;
  }
  return t;
}

int64_t count_valid(const std::vector<int32_t>& t) {
  int64_t k = 0;
  for (int32_t x : t) k += x >= 0;
  return k;
}

// The plain definition with the full [n, V] logits, in fp64: the reference everything else is
// compared with. Returns the summed loss; fills lse and the gradients of grad_scale * loss.
struct Reference {
  double loss = 0;
  std::vector<double> lse, dh, demb;
};

Reference full_logits_cross_entropy(const std::vector<double>& h, const std::vector<double>& emb,
                                    const std::vector<int32_t>& targets, int64_t n, int64_t d,
                                    int64_t V, double s, double grad_scale) {
  Reference r;
  r.lse.assign(n, 0.0);
  r.dh.assign(n * d, 0.0);
  r.demb.assign(V * d, 0.0);
  std::vector<double> logits(V);
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < 0) continue;
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k) z += h[i * d + k] * emb[v * d + k];
      logits[v] = s * z;
      mx = std::max(mx, logits[v]);
    }
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[v] - mx);
    r.lse[i] = mx + std::log(sum);
    r.loss += r.lse[i] - logits[targets[i]];
    for (int64_t v = 0; v < V; ++v) {
      double g = std::exp(logits[v] - r.lse[i]) - (v == targets[i] ? 1.0 : 0.0);
      g *= s * grad_scale;
      for (int64_t k = 0; k < d; ++k) {
        r.dh[i * d + k] += g * emb[v * d + k];
        r.demb[v * d + k] += g * h[i * d + k];
      }
    }
  }
  return r;
}

class CrossEntropyTest : public ::testing::TestWithParam<XentCase> {};

TEST_P(CrossEntropyTest, GradientsMatchFiniteDifferences) {
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  auto h = testing::random_normal(n * d, 1);
  auto emb = testing::random_normal(V * d, 2, 0.5);
  auto targets = make_targets(n, V, ignore_every, 3);
  const double grad_scale = 0.37;
  std::vector<double> lse(n);

  auto loss = [&] {
    return grad_scale * tied_cross_entropy_forward(h.data(), emb.data(), targets.data(),
                                                   lse.data(), n, d, V, s, chunk, nullptr);
  };
  loss();
  std::vector<double> dh(h.size()), demb(emb.size());
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, s, chunk, grad_scale);
  testing::expect_gradients_match(loss, {{"h", &h, &dh}, {"emb", &emb, &demb}});
}

TEST_P(CrossEntropyTest, MatchesFullLogitsSoftmax) {
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  auto h = testing::random_normal(n * d, 4);
  auto emb = testing::random_normal(V * d, 5, 0.5);
  auto targets = make_targets(n, V, ignore_every, 6);
  const double grad_scale = 1.0 / std::max<int64_t>(count_valid(targets), 1);
  Reference ref = full_logits_cross_entropy(h, emb, targets, n, d, V, s, grad_scale);

  std::vector<double> lse(n), dh(n * d), demb(V * d);
  int64_t valid = -1;
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, s, chunk, &valid);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, s, chunk, grad_scale);
  EXPECT_EQ(valid, count_valid(targets));
  EXPECT_NEAR(loss, ref.loss, 1e-12 * std::abs(ref.loss));
  EXPECT_LT(testing::relative_error(lse, ref.lse), 1e-13);
  EXPECT_LT(testing::relative_error(dh, ref.dh), 1e-12);
  EXPECT_LT(testing::relative_error(demb, ref.demb), 1e-12);
}

TEST_P(CrossEntropyTest, Float32MatchesFloat64) {
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  auto h = testing::random_normal(n * d, 7);
  auto emb = testing::random_normal(V * d, 8, 0.5);
  auto targets = make_targets(n, V, ignore_every, 9);
  const double grad_scale = 0.5;

  std::vector<double> lse(n), dh(n * d), demb(V * d);
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, s, chunk, nullptr);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, s, chunk, grad_scale);

  auto hf = testing::to_f32(h), embf = testing::to_f32(emb);
  std::vector<float> lsef(n), dhf(n * d), dembf(V * d);
  const double lossf = tied_cross_entropy_forward(hf.data(), embf.data(), targets.data(),
                                                  lsef.data(), n, d, V, float(s), chunk, nullptr);
  tied_cross_entropy_backward(hf.data(), embf.data(), targets.data(), lsef.data(), dhf.data(),
                              dembf.data(), n, d, V, float(s), chunk, float(grad_scale));
  EXPECT_NEAR(lossf, loss, 1e-5 * std::abs(loss));
  EXPECT_LT(testing::relative_error(lsef, lse), 1e-5);
  EXPECT_LT(testing::relative_error(dhf, dh), 1e-5);
  EXPECT_LT(testing::relative_error(dembf, demb), 1e-5);
}

// Chunking is an implementation detail: chunk = V, 7 and 1 give the same loss, lse and gradients.
TEST_P(CrossEntropyTest, ChunkSizeDoesNotChangeResults) {
  const auto [n, d, V, chunk_unused, s, ignore_every] = GetParam();
  auto h = testing::random_normal(n * d, 10);
  auto emb = testing::random_normal(V * d, 11, 0.5);
  auto targets = make_targets(n, V, ignore_every, 12);

  struct Out {
    double loss;
    std::vector<double> lse, dh, demb;
  };
  auto run = [&](int64_t chunk) {
    Out o{0, std::vector<double>(n), std::vector<double>(n * d), std::vector<double>(V * d)};
    o.loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), o.lse.data(), n, d,
                                        V, s, chunk, nullptr);
    tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), o.lse.data(), o.dh.data(),
                                o.demb.data(), n, d, V, s, chunk, 1.0);
    return o;
  };
  const Out whole = run(V);
  for (int64_t chunk : {int64_t(7), int64_t(1), 3 * V}) {
    SCOPED_TRACE(fmt::format("chunk {}", chunk));
    const Out part = run(chunk);
    EXPECT_NEAR(part.loss, whole.loss, 1e-12 * std::abs(whole.loss));
    EXPECT_LT(testing::relative_error(part.lse, whole.lse), 1e-13);
    EXPECT_LT(testing::relative_error(part.dh, whole.dh), 1e-12);
    EXPECT_LT(testing::relative_error(part.demb, whole.demb), 1e-12);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyTest,
    ::testing::Values(XentCase{1, 1, 2, 1, 1.0, 0}, XentCase{5, 3, 11, 4, 1.0, 0},
                      XentCase{7, 8, 13, 5, 0.7, 3}, XentCase{9, 5, 17, 1, 1.9, 2},
                      XentCase{12, 16, 32, 32, 0.25, 4}, XentCase{6, 4, 30, 7, 2.5, 5}),
    [](const auto& info) {
      const XentCase& c = info.param;
      return fmt::format("n{}_d{}_V{}_chunk{}_scale{}{}", c.n, c.d, c.V, c.chunk,
                         static_cast<int>(std::lround(c.logit_scale * 100)),
                         c.ignore_every ? fmt::format("_ignore{}", c.ignore_every) : "");
    });

// LogitRounding::bf16 (the GPU's stored logits) is the plain definition on the logits rounded
// to bf16: the full-logits reference fed those rounded values reproduces it.
TEST_P(CrossEntropyTest, Bf16LogitsAreTheLossOfTheRoundedLogits) {
  const auto [n, d, V, chunk, s, ignore_every] = GetParam();
  auto h = testing::random_normal(n * d, 23);
  auto emb = testing::random_normal(V * d, 24, 0.5);
  auto targets = make_targets(n, V, ignore_every, 25);
  const double grad_scale = 0.8;
  // The rounded logits as rows of a one-hot "embedding": h' = rounded logits [n, V], emb' = I_V,
  // scale 1, so the reference sees exactly the rounded values. Its dh' is the gradient of the
  // logits, from which dh = s dlogits emb and demb = s dlogits^T h follow.
  std::vector<double> logits(n * V), eye(V * V, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t v = 0; v < V; ++v) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k) z += h[i * d + k] * emb[v * d + k];
      logits[i * V + v] = to_float(to_bf16(static_cast<float>(s * z)));
    }
  for (int64_t v = 0; v < V; ++v) eye[v * V + v] = 1.0;
  Reference ref = full_logits_cross_entropy(logits, eye, targets, n, V, V, 1.0, grad_scale);
  std::vector<double> ref_dh(n * d, 0.0), ref_demb(V * d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t v = 0; v < V; ++v)
      for (int64_t k = 0; k < d; ++k) {
        ref_dh[i * d + k] += s * ref.dh[i * V + v] * emb[v * d + k];
        ref_demb[v * d + k] += s * ref.dh[i * V + v] * h[i * d + k];
      }

  std::vector<double> lse(n), dh(n * d), demb(V * d);
  const double loss =
      tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V, s,
                                 chunk, nullptr, LogitRounding::bf16);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, s, chunk, grad_scale, LogitRounding::bf16);
  EXPECT_NEAR(loss, ref.loss, 1e-12 * std::abs(ref.loss));
  EXPECT_LT(testing::relative_error(lse, ref.lse), 1e-13);
  EXPECT_LT(testing::relative_error(dh, ref_dh), 1e-12);
  EXPECT_LT(testing::relative_error(demb, ref_demb), 1e-12);
  // And the rounding is real: the exact loss differs (these logits are not all bf16 values).
  const double exact = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(),
                                                  lse.data(), n, d, V, s, chunk, nullptr);
  if (count_valid(targets) > 0) {
    EXPECT_NE(exact, loss);
  }
}

// The GPU workspace: kept slots, the shared slot only when some chunk is recomputed, every part
// 256-byte aligned and disjoint; a bad plan is refused naming the field.
TEST(CrossEntropy, WorkspaceLayout) {
  CrossEntropyPlan p{.n = 5, .d = 3, .V = 10, .chunk = 4, .kept_chunks = 2};
  EXPECT_EQ(cross_entropy_chunks(p), 3);
  CrossEntropyWorkspace w = cross_entropy_workspace(p);
  EXPECT_EQ(w.slot_bytes, 256u);  // 5 x 4 bf16, rounded up
  EXPECT_EQ(w.kept, 0u);
  EXPECT_EQ(w.shared, 2 * w.slot_bytes);
  EXPECT_EQ(w.row_max, 3 * w.slot_bytes);
  for (size_t offset : {w.kept, w.shared, w.row_max, w.row_sum, w.target_logit, w.result, w.dh})
    EXPECT_EQ(offset % 256, 0u);
  EXPECT_LT(w.result, w.dh);
  EXPECT_EQ(w.bytes, w.dh + 256);  // 5 x 3 fp32, rounded up

  p.kept_chunks = 3;  // every chunk kept: no shared slot
  w = cross_entropy_workspace(p);
  EXPECT_EQ(w.shared, w.row_max);
  EXPECT_EQ(w.shared, 3 * w.slot_bytes);

  // A chunk wider than the vocabulary gives slots of V columns.
  p = {.n = 8192, .d = 2560, .V = 100, .chunk = 8192, .kept_chunks = 1};
  EXPECT_EQ(cross_entropy_workspace(p).slot_bytes, size_t(2) * 8192 * 100);

  // n 8192, V 200064, chunk 8192: 25 chunks of 128 MiB; all kept is 3.05 GiB of logits.
  p = {.n = 8192, .d = 2560, .V = 200064, .chunk = 8192, .kept_chunks = 25};
  EXPECT_EQ(cross_entropy_chunks(p), 25);
  EXPECT_EQ(cross_entropy_workspace(p).kept + 25 * (size_t(2) * 8192 * 8192),
            cross_entropy_workspace(p).row_max);

  p.kept_chunks = 26;
  try {
    cross_entropy_workspace(p);
    ADD_FAILURE() << "kept_chunks 26 of 25 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kept_chunks = 26"), std::string::npos) << e.what();
  }
  p.kept_chunks = 0, p.chunk = 0;
  EXPECT_THROW(cross_entropy_workspace(p), Error);
}

TEST(CrossEntropy, BackwardAccumulatesAndSkipsNullGradients) {
  const int64_t n = 4, d = 3, V = 9, chunk = 4;
  auto h = testing::random_normal(n * d, 13);
  auto emb = testing::random_normal(V * d, 14);
  auto targets = make_targets(n, V, 0, 15);
  std::vector<double> lse(n);
  tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V, 1.3,
                             chunk, nullptr);
  std::vector<double> dh1(n * d), demb1(V * d);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh1.data(),
                              demb1.data(), n, d, V, 1.3, chunk, 0.6);
  std::vector<double> dh2 = dh1, demb2 = demb1;
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh2.data(),
                              demb2.data(), n, d, V, 1.3, chunk, 0.6);
  for (size_t i = 0; i < dh1.size(); ++i) EXPECT_DOUBLE_EQ(dh2[i], 2 * dh1[i]);
  for (size_t i = 0; i < demb1.size(); ++i) EXPECT_DOUBLE_EQ(demb2[i], 2 * demb1[i]);

  std::vector<double> dh_only(n * d), demb_only(V * d);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh_only.data(),
                              static_cast<double*>(nullptr), n, d, V, 1.3, chunk, 0.6);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(),
                              static_cast<double*>(nullptr), demb_only.data(), n, d, V, 1.3,
                              chunk, 0.6);
  for (size_t i = 0; i < dh1.size(); ++i) EXPECT_DOUBLE_EQ(dh_only[i], dh1[i]);
  for (size_t i = 0; i < demb1.size(); ++i) EXPECT_DOUBLE_EQ(demb_only[i], demb1[i]);
}

// Ignored rows contribute nothing: no loss, lse 0, zero gradient, and their h does not matter.
TEST(CrossEntropy, IgnoredRowsHaveNoLossAndNoGradient) {
  const int64_t n = 6, d = 4, V = 10, chunk = 3;
  auto h = testing::random_normal(n * d, 16);
  auto emb = testing::random_normal(V * d, 17);
  std::vector<int32_t> targets = {3, -1, 9, -100, 0, -7};
  std::vector<double> lse(n, 123.0), dh(n * d), demb(V * d);
  int64_t valid = -1;
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, 1.0, chunk, &valid);
  EXPECT_EQ(valid, 3);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, 1.0, chunk, 1.0);
  for (int64_t i : {1, 3, 5}) {
    EXPECT_EQ(lse[i], 0.0) << "row " << i;
    for (int64_t k = 0; k < d; ++k) EXPECT_EQ(dh[i * d + k], 0.0) << "row " << i;
  }
  // Moving an ignored row's hidden state leaves the loss unchanged.
  for (int64_t k = 0; k < d; ++k) h[1 * d + k] += 5.0;
  const double moved = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(),
                                                  lse.data(), n, d, V, 1.0, chunk, nullptr);
  EXPECT_EQ(moved, loss);
}

TEST(CrossEntropy, AllRowsIgnored) {
  const int64_t n = 3, d = 2, V = 5;
  auto h = testing::random_normal(n * d, 18);
  auto emb = testing::random_normal(V * d, 19);
  std::vector<int32_t> targets = {-1, -1, -2};
  std::vector<double> lse(n, 7.0), dh(n * d), demb(V * d);
  int64_t valid = -1;
  EXPECT_EQ(tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V,
                                       1.0, 2, &valid),
            0.0);
  EXPECT_EQ(valid, 0);
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                              demb.data(), n, d, V, 1.0, 2, 1.0);
  for (double x : lse) EXPECT_EQ(x, 0.0);
  for (double x : dh) EXPECT_EQ(x, 0.0);
  for (double x : demb) EXPECT_EQ(x, 0.0);
}

// A uniform predictor (all logits equal) has loss log(V) per row: a value known without code.
TEST(CrossEntropy, UniformLogitsGiveLogV) {
  const int64_t n = 4, d = 3, V = 37;
  std::vector<double> h(n * d, 0.0), emb = testing::random_normal(V * d, 20);
  std::vector<int32_t> targets = {0, 36, 5, -1};
  std::vector<double> lse(n);
  int64_t valid = 0;
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, 1.0, 8, &valid);
  EXPECT_EQ(valid, 3);
  EXPECT_NEAR(loss, 3 * std::log(37.0), 1e-13);
}

TEST(CrossEntropy, TargetOutOfRangeThrowsNamingRowAndValue) {
  const int64_t n = 4, d = 2, V = 6;
  auto h = testing::random_normal(n * d, 21);
  auto emb = testing::random_normal(V * d, 22);
  std::vector<int32_t> targets = {1, 5, -1, 6};
  std::vector<double> lse(n), dh(n * d), demb(V * d);
  for (int pass = 0; pass < 2; ++pass) {
    try {
      if (pass == 0)
        tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V, 1.0,
                                   4, nullptr);
      else
        tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), dh.data(),
                                    demb.data(), n, d, V, 1.0, 4, 1.0);
      ADD_FAILURE() << "target 6 >= V = 6 was accepted (pass " << pass << ")";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("row 3"), std::string::npos) << msg;
      EXPECT_NE(msg.find("target 6"), std::string::npos) << msg;
    }
  }
}

TEST(CrossEntropy, BadChunkThrows) {
  std::vector<double> h(2), emb(6), lse(1);
  std::vector<int32_t> targets = {0};
  EXPECT_THROW(tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), 1, 2,
                                          3, 1.0, 0, nullptr),
               Error);
}

}  // namespace
}  // namespace sambay
