// LayerNorm and RMSNorm CUDA kernels (plain and fused with the residual update) against the CPU
// references in double on the same bf16 inputs.
#include <fmt/format.h>

#include "kernels/layernorm.h"
#include "kernels/rmsnorm.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

constexpr float kEps = 1e-5f;

struct NormCase {
  int64_t rows, d;
};

// Rows with an offset mean and a spread well above eps (as in the CPU tests).
std::vector<double> random_rows(int64_t n, uint64_t seed) {
  auto x = testing::random_normal(n, seed, 2.0);
  for (double& v : x) v += 0.7;
  return testing::round_to_bf16(x);
}

std::vector<double> random_weight(int64_t d, uint64_t seed) {
  auto w = testing::random_normal(d, seed, 0.3);
  for (double& v : w) v += 1.0;
  return testing::to_f64(testing::to_f32(w));
}

class NormsCudaTest : public ::testing::TestWithParam<NormCase> {};

TEST_P(NormsCudaTest, LayerNormForward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const auto x = random_rows(rows * d, 1);
  const auto w = random_weight(d, 2);
  const auto b = testing::random_f32(d, 3);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    double(kEps));

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_b(testing::to_f32(b)), d_mean(rows), d_rstd(rows);
  d_y.poison(), d_mean.poison(), d_rstd.poison();
  layernorm_forward_cuda(d_x.ptr, d_w.ptr, d_b.ptr, d_y.ptr, d_mean.ptr, d_rstd.ptr, rows, d, kEps,
                         nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_y), y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_mean), mean), 1e-5);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_rstd), rstd), 1e-5);
}

TEST_P(NormsCudaTest, LayerNormBackward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const auto x = random_rows(rows * d, 4);
  const auto w = random_weight(d, 5);
  const auto b = testing::random_f32(d, 6);
  const auto dy = testing::random_bf16(rows * d, 7);
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    double(kEps));
  std::vector<double> gx(rows * d), gw(d), gb(d);
  layernorm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), gx.data(), gw.data(),
                     gb.data(), rows, d);
  const auto dx0 = testing::initial_bf16_like(gx, 8);
  const auto dw0 = testing::initial_f32_like(gw, 9);
  const auto db0 = testing::initial_f32_like(gb, 10);

  // The GPU backward uses the GPU forward's statistics, as in training.
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d);
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(dy)), d_dx(testing::to_bf16_vector(dx0));
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_b(testing::to_f32(b)), d_mean(rows), d_rstd(rows);
  DeviceBuffer<float> d_dw(testing::to_f32(dw0)), d_db(testing::to_f32(db0));
  layernorm_forward_cuda(d_x.ptr, d_w.ptr, d_b.ptr, d_y.ptr, d_mean.ptr, d_rstd.ptr, rows, d, kEps,
                         nullptr);
  layernorm_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, d_dx.ptr, d_dw.ptr,
                          d_db.ptr, rows, d, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dx), testing::plus(dx0, gx)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), testing::plus(dw0, gw)), 1e-5);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_db), testing::plus(db0, gb)), 1e-5);
}

TEST_P(NormsCudaTest, LayerNormResidualForward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const float scale = 0.375f;
  const auto x = random_rows(rows * d, 11);
  const auto delta = testing::random_bf16(rows * d, 12);
  const auto w = random_weight(d, 13);
  const auto b = testing::random_f32(d, 14);
  std::vector<double> x_out(rows * d);
  for (int64_t i = 0; i < rows * d; ++i) x_out[i] = x[i] + double(scale) * delta[i];

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_delta(testing::to_bf16_vector(delta));
  DeviceBuffer<bf16> d_x_out(rows * d), d_y(rows * d);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_b(testing::to_f32(b)), d_mean(rows), d_rstd(rows);
  d_x_out.poison(), d_y.poison(), d_mean.poison(), d_rstd.poison();
  layernorm_residual_forward_cuda(d_x.ptr, d_delta.ptr, scale, d_x_out.ptr, d_w.ptr, d_b.ptr,
                                  d_y.ptr, d_mean.ptr, d_rstd.ptr, rows, d, kEps, nullptr);
  const auto got_x_out = testing::download_f64(d_x_out);
  EXPECT_LT(testing::relative_error(got_x_out, x_out), 1e-2);
  // The norm is of the stored (rounded) x_out.
  std::vector<double> y(rows * d), mean(rows), rstd(rows);
  layernorm_forward(got_x_out.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows,
                    d, double(kEps));
  EXPECT_LT(testing::relative_error(testing::download_f64(d_y), y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_mean), mean), 1e-5);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_rstd), rstd), 1e-5);

  // In place (x_out aliasing x) gives the same stream values.
  layernorm_residual_forward_cuda(d_x.ptr, d_delta.ptr, scale, d_x.ptr, d_w.ptr, d_b.ptr, d_y.ptr,
                                  d_mean.ptr, d_rstd.ptr, rows, d, kEps, nullptr);
  EXPECT_EQ(testing::download_f64(d_x), got_x_out);
}

TEST_P(NormsCudaTest, RmsNormForward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const auto x = random_rows(rows * d, 15);
  const auto w = random_weight(d, 16);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, double(kEps));

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows);
  d_y.poison(), d_rstd.poison();
  rmsnorm_forward_cuda(d_x.ptr, d_w.ptr, d_y.ptr, d_rstd.ptr, rows, d, kEps, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_y), y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_rstd), rstd), 1e-5);
}

TEST_P(NormsCudaTest, RmsNormBackward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const auto x = random_rows(rows * d, 17);
  const auto w = random_weight(d, 18);
  const auto dy = testing::random_bf16(rows * d, 19);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, d, double(kEps));
  std::vector<double> gx(rows * d), gw(d);
  rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), gx.data(), gw.data(), rows, d);
  const auto dx0 = testing::initial_bf16_like(gx, 20);
  const auto dw0 = testing::initial_f32_like(gw, 21);

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d);
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(dy)), d_dx(testing::to_bf16_vector(dx0));
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows), d_dw(testing::to_f32(dw0));
  rmsnorm_forward_cuda(d_x.ptr, d_w.ptr, d_y.ptr, d_rstd.ptr, rows, d, kEps, nullptr);
  rmsnorm_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, d_dx.ptr, d_dw.ptr, rows, d,
                        nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dx), testing::plus(dx0, gx)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), testing::plus(dw0, gw)), 1e-5);
}

TEST_P(NormsCudaTest, RmsNormResidualForward) {
  SAMBAY_REQUIRE_GPU();
  const auto [rows, d] = GetParam();
  const float scale = 1.25f;
  const auto x = random_rows(rows * d, 22);
  const auto delta = testing::random_bf16(rows * d, 23);
  const auto w = random_weight(d, 24);
  std::vector<double> x_out(rows * d);
  for (int64_t i = 0; i < rows * d; ++i) x_out[i] = x[i] + double(scale) * delta[i];

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_delta(testing::to_bf16_vector(delta));
  DeviceBuffer<bf16> d_x_out(rows * d), d_y(rows * d);
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows);
  d_x_out.poison(), d_y.poison(), d_rstd.poison();
  rmsnorm_residual_forward_cuda(d_x.ptr, d_delta.ptr, scale, d_x_out.ptr, d_w.ptr, d_y.ptr,
                                d_rstd.ptr, rows, d, kEps, nullptr);
  const auto got_x_out = testing::download_f64(d_x_out);
  EXPECT_LT(testing::relative_error(got_x_out, x_out), 1e-2);
  std::vector<double> y(rows * d), rstd(rows);
  rmsnorm_forward(got_x_out.data(), w.data(), y.data(), rstd.data(), rows, d, double(kEps));
  EXPECT_LT(testing::relative_error(testing::download_f64(d_y), y), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_rstd), rstd), 1e-5);
}

// Widths cover every row layout: 16-byte chunks with 1, 2 and 4 chunks a thread (d % 8 == 0:
// 16, 2560, 8200, 12000), single values with 1, 4 and 16 a thread (3, 7, 65, 130; 1500; 5001),
// and enough rows that backward blocks walk several rows (5000 x 24, 1000 x 2560).
INSTANTIATE_TEST_SUITE_P(Shapes, NormsCudaTest,
                         ::testing::Values(NormCase{1, 3}, NormCase{3, 7}, NormCase{5, 16},
                                           NormCase{4, 65}, NormCase{2, 130}, NormCase{17, 2560},
                                           NormCase{9, 1000}, NormCase{3, 1500},
                                           NormCase{2, 5001}, NormCase{3, 8200},
                                           NormCase{2, 12000}, NormCase{5000, 24},
                                           NormCase{1000, 2560}),
                         [](const auto& info) {
                           return fmt::format("rows{}_d{}", info.param.rows, info.param.d);
                         });

TEST(NormsCuda, NullGradientsAreSkipped) {
  SAMBAY_REQUIRE_GPU();
  const int64_t rows = 6, d = 40;
  const auto x = random_rows(rows * d, 25);
  const auto w = random_weight(d, 26);
  const auto b = testing::random_f32(d, 27);
  const auto dy = testing::random_bf16(rows * d, 28);
  std::vector<double> y(rows * d), mean(rows), rstd(rows), gx(rows * d), gw(d), gb(d);
  layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, d,
                    double(kEps));
  layernorm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), gx.data(), gw.data(),
                     gb.data(), rows, d);
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d), d_dy(testing::to_bf16_vector(dy));
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_b(testing::to_f32(b)), d_mean(rows), d_rstd(rows);
  DeviceBuffer<float> d_dw(d), d_db(d);
  d_dw.zero(), d_db.zero();
  layernorm_forward_cuda(d_x.ptr, d_w.ptr, d_b.ptr, d_y.ptr, d_mean.ptr, d_rstd.ptr, rows, d, kEps,
                         nullptr);
  layernorm_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_mean.ptr, d_rstd.ptr, nullptr, d_dw.ptr,
                          nullptr, rows, d, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), gw), 1e-5);
  EXPECT_EQ(testing::download_f64(d_db), std::vector<double>(d, 0.0));
}

TEST(NormsCuda, BackwardIsBitwiseReproducible) {
  SAMBAY_REQUIRE_GPU();
  const int64_t rows = 3000, d = 2560;
  const auto x = random_rows(rows * d, 29);
  const auto dy = testing::random_bf16(rows * d, 30);
  const auto w = random_weight(d, 31);
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_y(rows * d), d_dy(testing::to_bf16_vector(dy));
  DeviceBuffer<float> d_w(testing::to_f32(w)), d_rstd(rows), dw1(d), dw2(d);
  dw1.zero(), dw2.zero();
  rmsnorm_forward_cuda(d_x.ptr, d_w.ptr, d_y.ptr, d_rstd.ptr, rows, d, kEps, nullptr);
  rmsnorm_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, nullptr, dw1.ptr, rows, d, nullptr);
  rmsnorm_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_rstd.ptr, nullptr, dw2.ptr, rows, d, nullptr);
  EXPECT_EQ(dw1.download(), dw2.download());
}

TEST(NormsCuda, RejectsRowsWiderThanSupported) {
  SAMBAY_REQUIRE_GPU();
  DeviceBuffer<bf16> x(16385), y(16385);
  DeviceBuffer<float> w(16385), rstd(1);
  EXPECT_ANY_THROW(rmsnorm_forward_cuda(x.ptr, w.ptr, y.ptr, rstd.ptr, 1, 16385, kEps, nullptr));
}

}  // namespace
}  // namespace sambay
