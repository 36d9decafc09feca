#include "kernels/linear.h"
#include "tests/test_util.h"

#include <fmt/format.h>

namespace sambay {
namespace {

using testing::GradInput;

struct LinearCase {
  int64_t n, in, out;
  bool bias;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, GradientsMatchFiniteDifferences) {
  const auto [n, in, out, has_bias] = GetParam();
  auto x = testing::random_normal(n * in, 1);
  auto w = testing::random_normal(out * in, 2, 0.5);
  auto b = testing::random_normal(out, 3);
  auto probe = testing::random_normal(n * out, 4);
  std::vector<double> y(n * out);

  auto loss = [&] {
    linear_forward(x.data(), w.data(), has_bias ? b.data() : nullptr, y.data(), n, in, out);
    return testing::dot(y, probe);
  };
  loss();
  std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
  linear_backward(probe.data(), x.data(), w.data(), dx.data(), dw.data(),
                  has_bias ? db.data() : nullptr, n, in, out);

  std::vector<GradInput> inputs = {{"x", &x, &dx}, {"weight", &w, &dw}};
  if (has_bias) inputs.push_back({"bias", &b, &db});
  testing::expect_gradients_match(loss, inputs);
}

TEST_P(LinearTest, Float32MatchesFloat64) {
  const auto [n, in, out, has_bias] = GetParam();
  auto x = testing::random_normal(n * in, 5);
  auto w = testing::random_normal(out * in, 6, 0.5);
  auto b = testing::random_normal(out, 7);
  std::vector<double> y(n * out);
  linear_forward(x.data(), w.data(), has_bias ? b.data() : nullptr, y.data(), n, in, out);
  auto xf = testing::to_f32(x), wf = testing::to_f32(w), bf = testing::to_f32(b);
  std::vector<float> yf(n * out);
  linear_forward(xf.data(), wf.data(), has_bias ? bf.data() : nullptr, yf.data(), n, in, out);
  EXPECT_LT(testing::relative_error(yf, y), 1e-5);
}

TEST(Linear, BackwardAccumulatesIntoGradients) {
  const int64_t n = 3, in = 4, out = 5;
  auto x = testing::random_normal(n * in, 8);
  auto w = testing::random_normal(out * in, 9);
  auto dy = testing::random_normal(n * out, 10);
  std::vector<double> dx1(n * in), dw1(out * in), db1(out);
  linear_backward(dy.data(), x.data(), w.data(), dx1.data(), dw1.data(), db1.data(), n, in, out);
  std::vector<double> dx2 = dx1, dw2 = dw1, db2 = db1;
  linear_backward(dy.data(), x.data(), w.data(), dx2.data(), dw2.data(), db2.data(), n, in, out);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);
  for (size_t i = 0; i < db1.size(); ++i) EXPECT_DOUBLE_EQ(db2[i], 2 * db1[i]);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 1, 1, true}, LinearCase{7, 5, 3, true},
                                           LinearCase{13, 16, 9, false},
                                           LinearCase{4, 33, 65, true}),
                         [](const auto& info) {
                           const LinearCase& c = info.param;
                           return fmt::format("n{}_in{}_out{}{}", c.n, c.in, c.out,
                                              c.bias ? "_bias" : "");
                         });

}  // namespace
}  // namespace sambay
