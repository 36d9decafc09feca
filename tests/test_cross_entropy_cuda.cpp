// Chunked cross-entropy through the output head on the GPU against the CPU reference in double
// on the same bf16 operands. The GPU stores bf16 logits (fp32 accumulation, rounded once) and
// its loss is that of the stored logits, so the reference rounds its logits to bf16 the same way
// (LogitRounding::bf16); the distance to exact logits is checked separately. Every shape runs
// with no chunk kept (all recomputed in backward), some kept, and all kept.
#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <set>
#include <string>

#include "core/check.h"
#include "core/philox.h"
#include "kernels/cross_entropy.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct XentCase {
  int64_t n, d, V, chunk;
  float logit_scale;
  int ignore_every;  // every ignore_every-th row (from row 1) gets a negative target; 0: none
  int64_t kept;      // chunks kept from forward to backward
};

std::vector<int32_t> make_targets(int64_t n, int64_t V, int ignore_every, uint64_t seed) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) {
    t[i] = static_cast<int32_t>(philox_below(seed, 3, i, V));
    if (ignore_every > 0 && i % ignore_every == 1) t[i] = (i / ignore_every) % 2 ? -100 : -1;
  }
  return t;
}

CrossEntropyPlan make_plan(int64_t n, int64_t d, int64_t V, int64_t chunk, int64_t kept) {
  return CrossEntropyPlan{n, d, V, chunk, kept};
}

// The device side of one loss: operands, targets, lse and the workspace of a plan.
struct DeviceLoss {
  CrossEntropyPlan plan;
  DeviceBuffer<bf16> h, w;
  DeviceBuffer<int32_t> targets;
  DeviceBuffer<float> lse;
  DeviceBuffer<unsigned char> workspace;
  DeviceLoss(const CrossEntropyPlan& p, const std::vector<double>& h_,
             const std::vector<double>& w_, const std::vector<int32_t>& t)
      : plan(p),
        h(testing::to_bf16_vector(h_)),
        w(testing::to_bf16_vector(w_)),
        targets(t),
        lse(p.n),
        workspace(static_cast<int64_t>(cross_entropy_workspace(p).bytes)) {
    lse.poison();
    workspace.poison();  // NaN logits: a slot read before it is written fails the comparison
  }
  double forward(float s, int64_t* valid) {
    return tied_cross_entropy_forward_cuda(h.ptr, w.ptr, targets.ptr, lse.ptr, plan, s,
                                           workspace.ptr, valid, nullptr);
  }
  void backward(bf16* dh, float* dw, float s, float grad_scale) {
    tied_cross_entropy_backward_cuda(h.ptr, w.ptr, targets.ptr, lse.ptr, dh, dw, plan, s,
                                     grad_scale, workspace.ptr, nullptr);
  }
};

class CrossEntropyCudaTest : public ::testing::TestWithParam<XentCase> {};

TEST_P(CrossEntropyCudaTest, ForwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, d, V, chunk, s, ignore_every, kept] = GetParam();
  const auto h = testing::random_bf16(n * d, 1);
  const auto emb = testing::random_bf16(V * d, 2);
  const auto targets = make_targets(n, V, ignore_every, 3);
  std::vector<double> lse(n);
  int64_t valid = -1;
  const double loss = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                 n, d, V, double(s), chunk, &valid,
                                                 LogitRounding::bf16);

  DeviceLoss gpu(make_plan(n, d, V, chunk, kept), h, emb, targets);
  int64_t got_valid = -1;
  const double got_loss = gpu.forward(s, &got_valid);
  EXPECT_EQ(got_valid, valid);
  EXPECT_NEAR(got_loss, loss, 1e-5 * std::abs(loss));
  // lse in fp32 from the bf16 logits; ignored rows hold 0.
  EXPECT_LT(testing::relative_error(testing::download_f64(gpu.lse), lse), 1e-5);
}

TEST_P(CrossEntropyCudaTest, BackwardAddsBothGradients) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, d, V, chunk, s, ignore_every, kept] = GetParam();
  const auto h = testing::random_bf16(n * d, 4);
  const auto emb = testing::random_bf16(V * d, 5);
  const auto targets = make_targets(n, V, ignore_every, 6);
  std::vector<double> lse(n), gh(n * d), gemb(V * d);
  int64_t valid = 0;
  tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(), n, d, V, double(s),
                             chunk, &valid, LogitRounding::bf16);
  const float grad_scale = 1.0f / float(std::max<int64_t>(valid, 1));
  tied_cross_entropy_backward(h.data(), emb.data(), targets.data(), lse.data(), gh.data(),
                              gemb.data(), n, d, V, double(s), chunk, double(grad_scale),
                              LogitRounding::bf16);
  const auto dh0 = testing::initial_bf16_like(gh, 7);
  const auto demb0 = testing::initial_f32_like(gemb, 8);

  DeviceLoss gpu(make_plan(n, d, V, chunk, kept), h, emb, targets);
  DeviceBuffer<bf16> d_dh(testing::to_bf16_vector(dh0));
  DeviceBuffer<float> d_demb(testing::to_f32(demb0));
  gpu.forward(s, nullptr);
  gpu.backward(d_dh.ptr, d_demb.ptr, s, grad_scale);
  // The softmax gradient is rounded to bf16 before the two GEMMs: bf16-level agreement.
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dh), testing::plus(dh0, gh)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_demb), testing::plus(demb0, gemb)),
            1e-2);

  // Null gradients are skipped: demb alone (after a fresh forward: backward consumes the kept
  // logits).
  DeviceBuffer<float> d_demb_only(testing::to_f32(demb0));
  gpu.forward(s, nullptr);
  gpu.backward(nullptr, d_demb_only.ptr, s, grad_scale);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_demb_only), testing::plus(demb0, gemb)),
            1e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CrossEntropyCudaTest,
    ::testing::ValuesIn([] {
      // Chunk edges at no multiple of anything (V 3001 in chunks of 1024, V 2500 in chunks of
      // 333, chunks of 7 and 3), one chunk wider than V, odd and 16-byte rows; each shape with
      // no chunk kept (all recomputed in backward), half of them kept, and all kept.
      const XentCase shapes[] = {
          {1, 1, 1, 1, 1.0f, 0, 0},           {5, 3, 7, 3, 0.75f, 2, 0},
          {9, 16, 20, 7, 1.25f, 3, 0},        {33, 40, 50, 50, 0.5f, 4, 0},
          {64, 64, 1000, 256, 1.0f, 5, 0},    {130, 96, 3001, 1024, 0.25f, 7, 0},
          {200, 72, 2500, 333, 1.0f, 10, 0},  {257, 128, 5000, 8192, 0.125f, 0, 0}};
      std::vector<XentCase> cases;
      for (XentCase c : shapes) {
        const int64_t chunks = (c.V + c.chunk - 1) / c.chunk;
        for (int64_t kept : std::set<int64_t>{0, chunks / 2, chunks}) {
          c.kept = kept;
          cases.push_back(c);
        }
      }
      return cases;
    }()),
    [](const auto& info) {
      const XentCase& c = info.param;
      return fmt::format("n{}_d{}_V{}_chunk{}_scale{}_ignore{}_kept{}of{}", c.n, c.d, c.V,
                         c.chunk, int(c.logit_scale * 100), c.ignore_every, c.kept,
                         (c.V + c.chunk - 1) / c.chunk);
    });

// How many chunks are kept changes nothing: loss, lse and both gradients are the same bits (a
// chunk's logits are one GEMM with the same arguments whether kept or recomputed).
TEST(CrossEntropyCuda, KeptChunksDoNotChangeAnyBit) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 77, d = 48, V = 1531, chunk = 200;  // 8 chunks, the last of 131
  const float s = 0.6f;
  const auto h = testing::random_bf16(n * d, 31);
  const auto emb = testing::random_bf16(V * d, 32, 0.5);
  const auto targets = make_targets(n, V, 6, 33);
  struct Out {
    double loss;
    std::vector<float> lse, dw;
    std::vector<bf16> dh;
  };
  auto run = [&](int64_t kept) {
    DeviceLoss gpu(make_plan(n, d, V, chunk, kept), h, emb, targets);
    DeviceBuffer<bf16> dh(n * d);
    DeviceBuffer<float> dw(V * d);
    dh.zero(), dw.zero();
    Out o;
    o.loss = gpu.forward(s, nullptr);
    gpu.backward(dh.ptr, dw.ptr, s, 1.0f / n);
    o.lse = gpu.lse.download(), o.dh = dh.download(), o.dw = dw.download();
    return o;
  };
  const Out none = run(0);
  for (int64_t kept : {1, 3, 7, 8}) {
    SCOPED_TRACE(fmt::format("{} of 8 chunks kept", kept));
    const Out o = run(kept);
    EXPECT_EQ(o.loss, none.loss);
    EXPECT_EQ(std::memcmp(o.lse.data(), none.lse.data(), sizeof(float) * n), 0);
    EXPECT_EQ(std::memcmp(o.dh.data(), none.dh.data(), sizeof(bf16) * n * d), 0);
    EXPECT_EQ(std::memcmp(o.dw.data(), none.dw.data(), sizeof(float) * V * d), 0);
  }
}

// The kept slots hold logit_scale <h, w> rounded once to bf16, and the loss is that of those
// stored values: the fp64 loss of the downloaded logits agrees to fp32 reduction error.
TEST(CrossEntropyCuda, KeptLogitsAreRoundedOnceAndDefineTheLoss) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 45, d = 40, V = 700, chunk = 96;  // 8 chunks, the last of 28
  const float s = 1.5f;
  const auto h = testing::random_bf16(n * d, 41, 0.3);
  const auto emb = testing::random_bf16(V * d, 42, 0.3);
  const auto targets = make_targets(n, V, 5, 43);
  const CrossEntropyPlan plan = make_plan(n, d, V, chunk, 8);
  DeviceLoss gpu(plan, h, emb, targets);
  int64_t valid = 0;
  const double got = gpu.forward(s, &valid);

  const CrossEntropyWorkspace parts = cross_entropy_workspace(plan);
  const std::vector<unsigned char> bytes = gpu.workspace.download();
  std::vector<double> stored(n * V);
  for (int64_t v = 0; v < V; ++v)
    for (int64_t i = 0; i < n; ++i) {
      bf16 b;
      std::memcpy(&b, bytes.data() + parts.kept + parts.slot_bytes * (v / chunk) +
                          2 * (i * chunk + v % chunk),
                  2);
      stored[i * V + v] = to_float(b);
    }
  int64_t off_by_more = 0;
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) {
      double z = 0, magnitude = 0;
      for (int64_t k = 0; k < d; ++k) {
        z += h[i * d + k] * emb[v * d + k];
        magnitude += std::abs(h[i * d + k] * emb[v * d + k]);
      }
      const double exact = s * z, got_v = stored[i * V + v];
      // Rounded once from an fp32 accumulation: within half a bf16 ulp of the exact value, plus
      // the accumulation's error (bounded by d + 2 fp32 roundings of the terms' magnitude; 4x
      // that, for tensor-core adders that truncate).
      const double half_ulp = exact == 0 ? 0 : std::ldexp(1.0, std::ilogb(exact) - 8);
      const double accumulation = 4 * (d + 2) * std::ldexp(1.0, -24) * s * magnitude;
      off_by_more += std::abs(got_v - exact) > half_ulp + accumulation;
      mx = std::max(mx, got_v);
    }
    if (targets[i] < 0) continue;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(stored[i * V + v] - mx);
    loss += mx + std::log(sum) - stored[i * V + targets[i]];
  }
  EXPECT_EQ(off_by_more, 0) << "logits not rounded once to bf16";
  EXPECT_NEAR(got, loss, 1e-5 * std::abs(loss));  // fp32 row sums against fp64
}

// What bf16 logits cost against exact ones: the loss and lse stay within bf16 precision (2^-8
// relative) of the exact-logit reference; the distance is printed.
TEST(CrossEntropyCuda, Bf16LogitsStayWithinBf16PrecisionOfExactLogits) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 130, d = 96, V = 3001, chunk = 1024;
  const float s = 0.25f;
  const auto h = testing::random_bf16(n * d, 51);
  const auto emb = testing::random_bf16(V * d, 52);
  const auto targets = make_targets(n, V, 7, 53);
  std::vector<double> lse(n);
  const double exact = tied_cross_entropy_forward(h.data(), emb.data(), targets.data(), lse.data(),
                                                  n, d, V, double(s), chunk, nullptr);
  DeviceLoss gpu(make_plan(n, d, V, chunk, 1), h, emb, targets);
  const double got = gpu.forward(s, nullptr);
  const double loss_error = std::abs(got - exact) / std::abs(exact);
  const double lse_error = testing::relative_error(testing::download_f64(gpu.lse), lse);
  std::printf("  bf16 logits vs exact: loss %.2e relative, lse %.2e\n", loss_error, lse_error);
  EXPECT_LT(loss_error, 1.0 / 256);
  EXPECT_LT(lse_error, 1.0 / 256);
}

TEST(CrossEntropyCuda, TargetOutsideTheVocabularyThrowsNamingTheRow) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 6, d = 8, V = 10;
  const auto h = testing::random_bf16(n * d, 9);
  const auto emb = testing::random_bf16(V * d, 10);
  const std::vector<int32_t> targets = {1, -1, 3, 10, 2, 12};
  for (int64_t kept : {0, 1, 3}) {
    DeviceLoss gpu(make_plan(n, d, V, 4, kept), h, emb, targets);
    try {
      gpu.forward(1.0f, nullptr);
      ADD_FAILURE() << "expected a throw (kept " << kept << ")";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("target 10 at row 3"), std::string::npos) << message;
    }
  }
}

TEST(CrossEntropyCuda, AllRowsIgnoredGiveZeroLossAndGradient) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 4, d = 8, V = 12;
  const std::vector<int32_t> targets(n, -1);
  for (int64_t kept : {0, 1, 3}) {
    DeviceLoss gpu(make_plan(n, d, V, 5, kept), testing::random_bf16(n * d, 11),
                   testing::random_bf16(V * d, 12), targets);
    DeviceBuffer<float> d_demb(V * d);
    DeviceBuffer<bf16> d_dh(n * d);
    d_demb.zero(), d_dh.zero();
    int64_t valid = -1;
    EXPECT_EQ(gpu.forward(1.0f, &valid), 0.0);
    EXPECT_EQ(valid, 0);
    EXPECT_EQ(gpu.lse.download(), std::vector<float>(n, 0.0f));
    gpu.backward(d_dh.ptr, d_demb.ptr, 1.0f, 1.0f);
    EXPECT_EQ(d_demb.download(), std::vector<float>(V * d, 0.0f));
    EXPECT_EQ(testing::download_f64(d_dh), std::vector<double>(n * d, 0.0));
  }
}

TEST(CrossEntropyCuda, BadWorkspaceOrPlanIsRefused) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 4, d = 8, V = 12;
  const std::vector<int32_t> targets(n, 1);
  DeviceLoss gpu(make_plan(n, d, V, 5, 1), testing::random_bf16(n * d, 13),
                 testing::random_bf16(V * d, 14), targets);
  EXPECT_THROW(tied_cross_entropy_forward_cuda(gpu.h.ptr, gpu.w.ptr, gpu.targets.ptr, gpu.lse.ptr,
                                               gpu.plan, 1.0f, nullptr, nullptr, nullptr),
               Error);
  CrossEntropyPlan too_many = gpu.plan;
  too_many.kept_chunks = 4;  // of 3
  EXPECT_THROW(tied_cross_entropy_forward_cuda(gpu.h.ptr, gpu.w.ptr, gpu.targets.ptr, gpu.lse.ptr,
                                               too_many, 1.0f, gpu.workspace.ptr, nullptr,
                                               nullptr),
               Error);
}

}  // namespace
}  // namespace sambay
