// linear_forward_cuda / linear_backward_cuda against the CPU linear<double> on the same operands.
#include <fmt/format.h>

#include "kernels/linear.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

struct LinearCase {
  int64_t n, in, out;
  bool bias;
};

class LinearCudaTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearCudaTest, ForwardMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, in, out, has_bias] = GetParam();
  const auto x = testing::random_bf16(n * in, 1);
  const auto w = testing::random_bf16(out * in, 2, 0.5);
  const auto b = testing::random_f32(out, 3);
  std::vector<double> expected(n * out);
  linear_forward(x.data(), w.data(), has_bias ? b.data() : nullptr, expected.data(), n, in, out);

  DeviceBuffer<bf16> dx(testing::to_bf16_vector(x)), dw(testing::to_bf16_vector(w)), dy(n * out);
  DeviceBuffer<float> db(testing::to_f32(b));
  dy.poison();
  linear_forward_cuda(dx.ptr, dw.ptr, has_bias ? db.ptr : nullptr, dy.ptr, n, in, out, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(dy), expected), 1e-2);
}

TEST_P(LinearCudaTest, BackwardAddsEveryGradient) {
  SAMBAY_REQUIRE_GPU();
  const auto [n, in, out, has_bias] = GetParam();
  const auto x = testing::random_bf16(n * in, 4);
  const auto w = testing::random_bf16(out * in, 5, 0.5);
  const auto dy = testing::random_bf16(n * out, 6);
  std::vector<double> gx(n * in), gw(out * in), gb(out);
  linear_backward(dy.data(), x.data(), w.data(), gx.data(), gw.data(), gb.data(), n, in, out);
  const auto dx0 = testing::initial_bf16_like(gx, 7);
  const auto dw0 = testing::initial_f32_like(gw, 8);
  const auto db0 = testing::initial_f32_like(gb, 9);

  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_w(testing::to_bf16_vector(w));
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(dy)), d_dx(testing::to_bf16_vector(dx0));
  DeviceBuffer<float> d_dw(testing::to_f32(dw0)), d_db(testing::to_f32(db0));
  linear_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, d_dx.ptr, d_dw.ptr, has_bias ? d_db.ptr : nullptr,
                       n, in, out, nullptr);
  // dx: bf16 output (one rounding); dW and db: fp32 outputs of exact bf16 products.
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dx), testing::plus(dx0, gx)), 1e-2);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), testing::plus(dw0, gw)), 1e-5);
  if (has_bias) {
    EXPECT_LT(testing::relative_error(testing::download_f64(d_db), testing::plus(db0, gb)), 1e-5);
  } else {
    EXPECT_EQ(testing::download_f64(d_db), db0);  // a null dbias is skipped
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearCudaTest,
                         ::testing::Values(LinearCase{1, 1, 1, true}, LinearCase{7, 5, 3, true},
                                           LinearCase{13, 16, 9, false},
                                           LinearCase{4, 33, 65, true},
                                           LinearCase{300, 96, 136, true},
                                           LinearCase{1100, 40, 24, true},
                                           LinearCase{256, 512, 1024, false}),
                         [](const auto& info) {
                           const LinearCase& c = info.param;
                           return fmt::format("n{}_in{}_out{}{}", c.n, c.in, c.out,
                                              c.bias ? "_bias" : "");
                         });

TEST(LinearCuda, NullGradientsAreSkipped) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = 9, in = 24, out = 16;
  const auto x = testing::random_bf16(n * in, 10);
  const auto w = testing::random_bf16(out * in, 11);
  const auto dy = testing::random_bf16(n * out, 12);
  std::vector<double> gx(n * in), gw(out * in), gb(out);
  linear_backward(dy.data(), x.data(), w.data(), gx.data(), gw.data(), gb.data(), n, in, out);
  DeviceBuffer<bf16> d_x(testing::to_bf16_vector(x)), d_w(testing::to_bf16_vector(w));
  DeviceBuffer<bf16> d_dy(testing::to_bf16_vector(dy));
  DeviceBuffer<float> d_dw(out * in), d_db(out);
  d_dw.zero(), d_db.zero();
  linear_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, nullptr, d_dw.ptr, nullptr, n, in, out, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_dw), gw), 1e-5);
  EXPECT_EQ(testing::download_f64(d_db), std::vector<double>(out, 0.0));
  linear_backward_cuda(d_dy.ptr, d_x.ptr, d_w.ptr, nullptr, nullptr, d_db.ptr, n, in, out, nullptr);
  EXPECT_LT(testing::relative_error(testing::download_f64(d_db), gb), 1e-5);
}

}  // namespace
}  // namespace sambay
