#include "tests/test_util.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace sambay::testing {

std::vector<double> random_normal(int64_t n, uint64_t seed, double scale) {
  std::vector<double> v(n);
  fill_normal(v.data(), n, 0.0, scale, seed, /*stream=*/0xC0FFEE);
  return v;
}

std::vector<double> random_uniform(int64_t n, uint64_t seed, double lo, double hi) {
  std::vector<double> v(n);
  fill_uniform(v.data(), n, lo, hi, seed, /*stream=*/0xBEEF);
  return v;
}

std::vector<float> to_f32(const std::vector<double>& v) { return {v.begin(), v.end()}; }
std::vector<double> to_f64(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (std::isnan(num)) return INFINITY;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double relative_error(const std::vector<float>& a, const std::vector<double>& b) {
  return relative_error(to_f64(a), b);
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

void expect_gradients_match(const std::function<double()>& loss,
                            const std::vector<GradInput>& inputs, double tolerance,
                            int samples_per_input, double step) {
  std::vector<GradSpan> spans;
  for (const GradInput& in : inputs) {
    ASSERT_EQ(in.value->size(), in.grad->size()) << in.name << ": value and gradient sizes differ";
    spans.push_back({in.name, in.value->data(), in.grad->data(),
                     static_cast<int64_t>(in.value->size())});
  }
  expect_gradients_match(loss, spans, tolerance, samples_per_input, step);
}

void expect_gradients_match(const std::function<double()>& loss,
                            const std::vector<GradSpan>& inputs, double tolerance,
                            int samples_per_input, double step) {
  for (const GradSpan& in : inputs) {
    const int64_t n = in.n;
    std::vector<int64_t> picks(n);
    std::iota(picks.begin(), picks.end(), 0);
    if (n > samples_per_input) {
      // Reproducible sample without replacement: partial Fisher-Yates on a Philox stream.
      for (int64_t i = 0; i < samples_per_input; ++i) {
        int64_t j = i + static_cast<int64_t>(philox_below(7, in.name.size(), i, n - i));
        std::swap(picks[i], picks[j]);
      }
      picks.resize(samples_per_input);
    }
    double err2 = 0, ref2 = 0, worst = 0;
    int64_t worst_at = -1;
    double worst_num = 0, worst_ana = 0;
    for (int64_t idx : picks) {
      double& x = in.value[idx];
      const double saved = x;
      const double h = step * std::max(1.0, std::abs(saved));
      // Five-point stencil: truncation error O(h^4), so h can be large enough to keep the
      // rounding error of the loss differences small even for tiny gradients.
      auto at = [&](double offset) {
        x = saved + offset;
        return loss();
      };
      const double d1 = at(h) - at(-h), d2 = at(2 * h) - at(-2 * h);
      x = saved;
      const double numeric = (8 * d1 - d2) / (12 * h);
      const double analytic = in.grad[idx];
      const double d = numeric - analytic;
      err2 += d * d;
      ref2 += numeric * numeric;
      if (std::abs(d) > worst || std::isnan(d)) {
        worst = std::isnan(d) ? INFINITY : std::abs(d);
        worst_at = idx, worst_num = numeric, worst_ana = analytic;
      }
    }
    loss();  // leave the forward's outputs at the unperturbed point
    const double rel = std::sqrt(err2) / std::max(std::sqrt(ref2), 1e-30);
    EXPECT_LT(rel, tolerance) << "gradient of " << in.name << ": relative error " << rel
                              << " over " << picks.size() << " elements; worst element "
                              << worst_at << " numeric " << worst_num << " analytic "
                              << worst_ana;
    EXPECT_GT(ref2, 0.0) << "gradient of " << in.name
                         << " is zero at every sampled element: the check proves nothing";
  }
}

}  // namespace sambay::testing
