// SiLU, SwiGLU, GMU/nGMU, embedding and RoPE CUDA kernels against the CPU references in double on
// the same bf16 inputs.
#include <fmt/format.h>

#include <cmath>
#include <cstring>

#include "core/philox.h"
#include "kernels/activations.h"
#include "kernels/embedding.h"
#include "kernels/gmu.h"
#include "kernels/rope.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

// ---------------------------------------------------------------------------------------------
// SiLU over n values (n % 8 == 0 takes the 16-byte path).

class SiluCudaTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(SiluCudaTest, ForwardAndBackwardMatchCpu) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = GetParam();
  const auto x = testing::random_bf16(n, 1, 3.0);
  const auto dy = testing::random_bf16(n, 2);
  std::vector<double> y(n), gx(n);
  silu_forward(x.data(), y.data(), n);
  silu_backward(dy.data(), x.data(), gx.data(), n);
  const auto dx0 = testing::initial_bf16_like(gx, 3);

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(n), d_dy(testing::to_bf16_vector(dy));
  DeviceBuffer<bf16> d_dx(testing::to_bf16_vector(dx0));
  d_y.poison();
  silu_forward_cuda(d_x.ptr, d_y.ptr, n, nullptr);
  silu_backward_cuda(d_dy.ptr, d_x.ptr, d_dx.ptr, n, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_y), y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dx), testing::plus(dx0, gx)), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Lengths, SiluCudaTest,
                         ::testing::Values(int64_t{1}, int64_t{7}, int64_t{64}, int64_t{1000},
                                           int64_t{4099}, int64_t{1} << 16, int64_t{3000017}),
                         [](const auto& info) { return fmt::format("n{}", info.param); });

// ---------------------------------------------------------------------------------------------
// SwiGLU on h [rows, 2F].

struct SwigluCase {
  int64_t rows, F;
};

class SwigluCudaTest : public ::testing::TestWithParam<SwigluCase> {};

TEST_P(SwigluCudaTest, ForwardAndBackwardMatchCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, F] = GetParam();
  const auto h = testing::random_bf16(rows * 2 * F, 4, 2.0);
  const auto dout = testing::random_bf16(rows * F, 5);
  std::vector<double> out(rows * F), gh(rows * 2 * F);
  swiglu_forward(h.data(), out.data(), rows, F);
  swiglu_backward(dout.data(), h.data(), gh.data(), rows, F);
  const auto dh0 = testing::initial_bf16_like(gh, 6);

  DeviceBuffer<bf16> d_h(testing::to_bf16_vector(h)), d_out(rows * F);
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout)), d_dh(testing::to_bf16_vector(dh0));
  d_out.poison();
  swiglu_forward_cuda(d_h.ptr, d_out.ptr, rows, F, nullptr);
  swiglu_backward_cuda(d_dout.ptr, d_h.ptr, d_dh.ptr, rows, F, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_out), out), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dh), testing::plus(dh0, gh)), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SwigluCudaTest,
                         ::testing::Values(SwigluCase{1, 1}, SwigluCase{3, 5}, SwigluCase{4, 16},
                                           SwigluCase{7, 100}, SwigluCase{64, 256},
                                           SwigluCase{33, 1032}),
                         [](const auto& info) {
                           return fmt::format("rows{}_F{}", info.param.rows, info.param.F);
                         });

// ---------------------------------------------------------------------------------------------
// GMU (norm_weight == nullptr) and nGMU.

struct GmuCase {
  int64_t rows, E;
  bool normed;
};

class GmuCudaTest : public ::testing::TestWithParam<GmuCase> {};

constexpr float kGmuEps = 1e-5f;

TEST_P(GmuCudaTest, ForwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, E, normed] = GetParam();
  const auto m = testing::random_bf16(rows * E, 7);
  const auto g = testing::random_bf16(rows * E, 8, 2.0);
  auto w = testing::random_normal(E, 9, 0.3);
  for (double& v : w) v += 1.0;
  w = testing::to_f64(testing::to_f32(w));
  std::vector<double> out(rows * E), rstd(rows);
  gmu_forward(m.data(), g.data(), normed ? w.data() : nullptr, out.data(), rstd.data(), rows, E,
              double(kGmuEps));

  DeviceBuffer<bf16> d_m(testing::to_bf16_vector(m)), d_g(testing::to_bf16_vector(g)),
      d_out(rows * E);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows);
  d_out.poison(), d_rstd.poison();
  gmu_forward_cuda(d_m.ptr, d_g.ptr, normed ? d_w.ptr : nullptr, d_out.ptr,
                   normed ? d_rstd.ptr : nullptr, rows, E, kGmuEps, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_out), out), 1e-2);
  if (normed) {
    EXPECT_LT(testing::relative_error(testing::download_f64(d_rstd), rstd), 1e-5);
  }
}

TEST_P(GmuCudaTest, BackwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, E, normed] = GetParam();
  const auto m = testing::random_bf16(rows * E, 10);
  const auto g = testing::random_bf16(rows * E, 11, 2.0);
  const auto dout = testing::random_bf16(rows * E, 12);
  auto w = testing::random_normal(E, 13, 0.3);
  for (double& v : w) v += 1.0;
  w = testing::to_f64(testing::to_f32(w));
  const double* wp = normed ? w.data() : nullptr;
  std::vector<double> out(rows * E), rstd(rows), gm(rows * E), gg(rows * E), gw(E);
  gmu_forward(m.data(), g.data(), wp, out.data(), rstd.data(), rows, E, double(kGmuEps));
  gmu_backward(dout.data(), m.data(), g.data(), wp, rstd.data(), gm.data(), gg.data(),
               normed ? gw.data() : nullptr, rows, E);
  const auto dm0 = testing::initial_bf16_like(gm, 14);
  const auto dg0 = testing::initial_bf16_like(gg, 15);
  const auto dw0 = testing::initial_f32_like(gw, 16);

  DeviceBuffer<bf16> d_m(testing::to_bf16_vector(m)), d_g(testing::to_bf16_vector(g));
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout)), d_out(rows * E);
  DeviceBuffer<bf16> d_dm(testing::to_bf16_vector(dm0)), d_dg(testing::to_bf16_vector(dg0));
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows), d_dw(testing::to_f32(dw0));
  gmu_forward_cuda(d_m.ptr, d_g.ptr, normed ? d_w.ptr : nullptr, d_out.ptr, d_rstd.ptr, rows, E,
                   kGmuEps, nullptr);
  gmu_backward_cuda(d_dout.ptr, d_m.ptr, d_g.ptr, normed ? d_w.ptr : nullptr, d_rstd.ptr, d_dm.ptr,
                    d_dg.ptr, normed ? d_dw.ptr : nullptr, rows, E, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dm), testing::plus(dm0, gm)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dg), testing::plus(dg0, gg)), 1e-2);
  if (normed) {
    EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), testing::plus(dw0, gw)), 1e-5);
  }

  // Null gradients are skipped: dg alone.
  DeviceBuffer<bf16> d_dg_only(testing::to_bf16_vector(dg0));
  gmu_backward_cuda(d_dout.ptr, d_m.ptr, d_g.ptr, normed ? d_w.ptr : nullptr, d_rstd.ptr, nullptr,
                    d_dg_only.ptr, nullptr, rows, E, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dg_only), testing::plus(dg0, gg)),
            1e-2);
}

INSTANTIATE_TEST_SUITE_P(Shapes, GmuCudaTest,
                         ::testing::Values(GmuCase{1, 3, false}, GmuCase{3, 7, false},
                                           GmuCase{5, 16, false}, GmuCase{17, 2560, false},
                                           GmuCase{1, 3, true}, GmuCase{3, 7, true},
                                           GmuCase{5, 16, true}, GmuCase{4, 65, true},
                                           GmuCase{17, 2560, true}, GmuCase{3, 5120, true},
                                           GmuCase{2, 1500, true}, GmuCase{6000, 40, true}),
                         [](const auto& info) {
                           const GmuCase& c = info.param;
                           return fmt::format("rows{}_E{}{}", c.rows, c.E, c.normed ? "_normed" : "");
                         });

// ---------------------------------------------------------------------------------------------
// Embedding.

struct EmbeddingCase {
  int64_t n, vocab, d;
};

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> tokens(n);
  for (int64_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>(philox_below(seed, 1, i, vocab));
  return tokens;
}

class EmbeddingCudaTest : public ::testing::TestWithParam<EmbeddingCase> {};

TEST_P(EmbeddingCudaTest, ForwardGathersExactRows) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, vocab, d] = GetParam();
  const auto tokens = random_tokens(n, vocab, 17);
  const auto table = testing::random_bf16(vocab * d, 18);
  std::vector<double> out(n * d);
  embedding_forward(tokens.data(), table.data(), out.data(), n, vocab, d);
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<bf16> d_table(testing::to_bf16_vector(table)), d_out(n * d);
  d_out.poison();
  embedding_forward_cuda(d_tokens.ptr, d_table.ptr, d_out.ptr, n, vocab, d, nullptr);
  EXPECT_EQ(testing::download_f64(d_out), out);
}

TEST_P(EmbeddingCudaTest, BackwardMatchesCpuAndIsReproducible) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, vocab, d] = GetParam();
  const auto tokens = random_tokens(n, vocab, 19);
  const auto dout = testing::random_bf16(n * d, 20);
  std::vector<double> gtable(vocab * d);
  embedding_backward(tokens.data(), dout.data(), gtable.data(), n, vocab, d);
  const auto dtable0 = testing::initial_f32_like(gtable, 21);
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(dout));
  DeviceBuffer<float> d_dtable(testing::to_f32(dtable0)), d_again(testing::to_f32(dtable0));
  embedding_backward_cuda(d_tokens.ptr, d_dout.ptr, d_dtable.ptr, n, vocab, d, nullptr);
  embedding_backward_cuda(d_tokens.ptr, d_dout.ptr, d_again.ptr, n, vocab, d, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dtable), testing::plus(dtable0, gtable)),
            1e-5);
  EXPECT_EQ(d_dtable.download(), d_again.download());  // deterministic: no atomics
}

INSTANTIATE_TEST_SUITE_P(Shapes, EmbeddingCudaTest,
                         ::testing::Values(EmbeddingCase{1, 1, 1}, EmbeddingCase{7, 5, 3},
                                           EmbeddingCase{64, 10, 16},
                                           EmbeddingCase{300, 1000, 2560},
                                           EmbeddingCase{1000, 3, 24},
                                           EmbeddingCase{4096, 50000, 72}),
                         [](const auto& info) {
                           const EmbeddingCase& c = info.param;
                           return fmt::format("n{}_vocab{}_d{}", c.n, c.vocab, c.d);
                         });

TEST(EmbeddingCuda, OutOfRangeTokensGiveNanRowsAndNoGradient) {
  SAMBAY_REQUIRE_GPU();
  const int64_t vocab = 4, d = 16;
  const std::vector<int32_t> tokens = {1, 4, -1, 2};
  const auto table = testing::random_bf16(vocab * d, 22);
  DeviceBuffer<int32_t> d_tokens(tokens);
  DeviceBuffer<bf16> d_table(testing::to_bf16_vector(table)), d_out(4 * d);
  embedding_forward_cuda(d_tokens.ptr, d_table.ptr, d_out.ptr, 4, vocab, d, nullptr);
  const auto out = testing::download_f64(d_out);
  for (int64_t j = 0; j < d; ++j) {
    EXPECT_EQ(out[j], table[1 * d + j]);
    EXPECT_TRUE(std::isnan(out[1 * d + j]));
    EXPECT_TRUE(std::isnan(out[2 * d + j]));
    EXPECT_EQ(out[3 * d + j], table[2 * d + j]);
  }
  DeviceBuffer<bf16> d_dout(testing::to_bf16_vector(testing::random_bf16(4 * d, 23)));
  DeviceBuffer<float> d_dtable(vocab * d);
  d_dtable.zero();
  embedding_backward_cuda(d_tokens.ptr, d_dout.ptr, d_dtable.ptr, 4, vocab, d, nullptr);
  const auto dtable = d_dtable.download();
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(dtable[0 * d + j], 0.0f);  // no token 0
  for (int64_t j = 0; j < d; ++j) EXPECT_EQ(dtable[3 * d + j], 0.0f);  // no token 3
}

// ---------------------------------------------------------------------------------------------
// RoPE.

struct RopeCase {
  int64_t B, L, heads, hd;
  double theta;
};

class RopeCudaTest : public ::testing::TestWithParam<RopeCase> {};

int64_t numel(const RopeCase& c) { return c.B * c.L * c.heads * c.hd; }

TEST_P(RopeCudaTest, ForwardAndBackwardMatchCpu) {
  SAMBAY_REQUIRE_GPU();
  const RopeCase c = GetParam();
  const auto x = testing::random_bf16(numel(c), 24);
  const auto dy = testing::random_bf16(numel(c), 25);
  std::vector<double> y(numel(c)), gx(numel(c));
  rope_forward(x.data(), y.data(), c.B, c.L, c.heads, c.hd, c.theta);
  rope_backward(dy.data(), gx.data(), c.B, c.L, c.heads, c.hd, c.theta);
  const auto dx0 = testing::initial_bf16_like(gx, 26);

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(numel(c));
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(dy)), d_dx(testing::to_bf16_vector(dx0));
  d_y.poison();
  rope_forward_cuda(d_x.ptr, d_y.ptr, c.B, c.L, c.heads, c.hd, c.theta, nullptr);
  rope_backward_cuda(d_dy.ptr, d_dx.ptr, c.B, c.L, c.heads, c.hd, c.theta, nullptr);
  const auto got_y = testing::download_f64(d_y);
  EXPECT_LT(testing::relative_error(got_y, y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dx), testing::plus(dx0, gx)), 1e-2);

  // In place (y aliasing x) gives the same values.
  rope_forward_cuda(d_x.ptr, d_x.ptr, c.B, c.L, c.heads, c.hd, c.theta, nullptr);
  EXPECT_EQ(testing::download_f64(d_x), got_y);
}

INSTANTIATE_TEST_SUITE_P(Shapes, RopeCudaTest,
                         ::testing::Values(RopeCase{1, 1, 1, 2, 10000}, RopeCase{2, 5, 3, 8, 10000},
                                           RopeCase{1, 7, 2, 6, 10}, RopeCase{2, 9, 1, 66, 10000},
                                           RopeCase{2, 64, 4, 128, 10000},
                                           RopeCase{1, 4096, 2, 64, 500000}),
                         [](const auto& info) {
                           const RopeCase& c = info.param;
                           return fmt::format("B{}_L{}_heads{}_hd{}_theta{}", c.B, c.L, c.heads,
                                              c.hd, c.theta);
                         });

}  // namespace
}  // namespace sambay
