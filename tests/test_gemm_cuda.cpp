// gemm_bf16_cuda against the CPU gemm<double> on the same (bf16-rounded) operands.
#include <fmt/format.h>

#include <cmath>

#include "core/check.h"
#include "kernels/gemm.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct GemmCase {
  int64_t m, n, k;
  bool trans_a, trans_b;
  bool f32_out, bias;
  float alpha, beta;
  int64_t pad;       // extra columns in every leading dimension (left untouched in C)
  int64_t a_offset;  // A starts this many elements into its buffer (misaligned pointers)
};

class GemmCudaTest : public ::testing::TestWithParam<GemmCase> {};

// C's initial contents: random where beta reads it; NaN where beta = 0 (cuBLASLt must not read
// it, and must write every element); the padding columns hold values that must survive.
std::vector<double> initial_c(const GemmCase& c, int64_t ldc) {
  auto values = testing::random_bf16(c.m * ldc, 4);
  if (c.beta == 0.0f)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) values[i * ldc + j] = NAN;
  return values;
}

TEST_P(GemmCudaTest, MatchesCpuReference) {
  SAMBAY_REQUIRE_GPU();
  const GemmCase c = GetParam();
  const int64_t a_rows = c.trans_a ? c.k : c.m, a_cols = c.trans_a ? c.m : c.k;
  const int64_t b_rows = c.trans_b ? c.n : c.k, b_cols = c.trans_b ? c.k : c.n;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.n + c.pad;
  const auto a = testing::random_bf16(c.a_offset + a_rows * lda, 1);
  const auto b = testing::random_bf16(b_rows * ldb, 2);
  const auto bias = testing::random_f32(c.n, 3);
  const auto c0 = initial_c(c, ldc);

  // Reference in double; the NaN of a beta = 0 C is never read.
  std::vector<double> expected = c0;
  if (c.beta == 0.0f)
    for (double& v : expected) v = std::isnan(v) ? 0.0 : v;
  if (c.k > 0)
    gemm<double>(c.trans_a, c.trans_b, c.m, c.n, c.k, c.alpha, a.data() + c.a_offset, lda,
                 b.data(), ldb, c.beta, expected.data(), ldc);
  else  // op(A) op(B) is empty: C = beta C
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) expected[i * ldc + j] *= c.beta;
  if (c.bias)
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) expected[i * ldc + j] += bias[j];

  DeviceBuffer<bf16> da(testing::to_bf16_vector(a)), db(testing::to_bf16_vector(b));
  DeviceBuffer<float> dbias(testing::to_f32(bias));
  std::vector<double> got;
  if (c.f32_out) {
    DeviceBuffer<float> dc(testing::to_f32(c0));
    gemm_bf16_cuda(c.trans_a, c.trans_b, c.m, c.n, c.k, c.alpha, da.ptr + c.a_offset, lda, db.ptr,
                   ldb, c.beta, dc.ptr, ldc, c.bias ? dbias.ptr : nullptr, nullptr);
    got = testing::download_f64(dc);
  } else {
    DeviceBuffer<bf16> dc(testing::to_bf16_vector(c0));
    gemm_bf16_cuda(c.trans_a, c.trans_b, c.m, c.n, c.k, c.alpha, da.ptr + c.a_offset, lda, db.ptr,
                   ldb, c.beta, dc.ptr, ldc, c.bias ? dbias.ptr : nullptr, nullptr);
    got = testing::download_f64(dc);
  }

  std::vector<double> got_block, expected_block;
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = 0; j < ldc; ++j) {
      if (j < c.n) {
        got_block.push_back(got[i * ldc + j]);
        expected_block.push_back(expected[i * ldc + j]);
      } else {
        ASSERT_EQ(got[i * ldc + j], c0[i * ldc + j]) << "padding of C changed at row " << i;
      }
    }
  // bf16 output: one rounding (2^-9 relative); fp32 output: fp32 accumulation only.
  EXPECT_LT(testing::relative_error(got_block, expected_block), c.f32_out ? 1e-5 : 1e-2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmCudaTest,
    ::testing::Values(GemmCase{1, 1, 1, false, false, false, false, 1.0f, 0.0f, 0, 0},
                      GemmCase{7, 5, 3, false, true, false, true, 1.0f, 0.0f, 0, 0},
                      GemmCase{13, 16, 9, true, false, true, false, 1.0f, 1.0f, 0, 0},
                      GemmCase{33, 65, 17, false, false, false, false, 0.5f, 1.0f, 3, 0},
                      GemmCase{8, 24, 16, false, true, false, true, 1.0f, 1.0f, 0, 0},
                      GemmCase{64, 128, 256, false, true, true, true, 1.0f, 0.0f, 0, 0},
                      GemmCase{130, 70, 300, true, true, false, false, 1.5f, 0.25f, 5, 1},
                      GemmCase{257, 129, 65, false, true, true, false, 1.0f, 0.5f, 0, 3},
                      GemmCase{96, 200, 72, true, false, true, true, 2.0f, 1.0f, 8, 8},
                      GemmCase{5, 7, 0, false, false, false, true, 1.0f, 0.5f, 1, 0},
                      GemmCase{5, 7, 0, false, false, true, false, 1.0f, 0.0f, 2, 0},
                      GemmCase{512, 1024, 768, false, true, false, true, 1.0f, 0.0f, 0, 0},
                      GemmCase{768, 512, 1024, true, false, true, false, 1.0f, 1.0f, 0, 0}),
    [](const auto& info) {
      const GemmCase& c = info.param;
      return fmt::format("m{}_n{}_k{}_{}{}_{}{}_a{}_b{}_pad{}_off{}", c.m, c.n, c.k,
                         c.trans_a ? "T" : "N", c.trans_b ? "T" : "N", c.f32_out ? "f32" : "bf16",
                         c.bias ? "_bias" : "", int(c.alpha * 100), int(c.beta * 100), c.pad,
                         c.a_offset);
    });

TEST(GemmCuda, RejectsTooSmallLeadingDimension) {
  SAMBAY_REQUIRE_GPU();
  DeviceBuffer<bf16> a(16), b(16), c(16);
  EXPECT_THROW(gemm_bf16_cuda(false, false, 2, 2, 4, 1.0f, a.ptr, 3, b.ptr, 2, 0.0f, c.ptr, 2,
                              nullptr, nullptr),
               Error);
}

TEST(GemmCuda, RepeatedCallsGiveIdenticalResults) {
  SAMBAY_REQUIRE_GPU();
  const int64_t m = 200, n = 96, k = 160;
  DeviceBuffer<bf16> a(testing::to_bf16_vector(testing::random_bf16(m * k, 5)));
  DeviceBuffer<bf16> b(testing::to_bf16_vector(testing::random_bf16(n * k, 6)));
  DeviceBuffer<float> c1(m * n), c2(m * n);
  c1.poison(), c2.poison();
  gemm_bf16_cuda(false, true, m, n, k, 1.0f, a.ptr, k, b.ptr, k, 0.0f, c1.ptr, n, nullptr, nullptr);
  gemm_bf16_cuda(false, true, m, n, k, 1.0f, a.ptr, k, b.ptr, k, 0.0f, c2.ptr, n, nullptr, nullptr);
  const auto r1 = c1.download(), r2 = c2.download();
  for (int64_t i = 0; i < m * n; ++i) ASSERT_EQ(r1[i], r2[i]) << "element " << i;
}

}  // namespace
}  // namespace sambay
