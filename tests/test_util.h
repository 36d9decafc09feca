// Shared helpers for the op tests: random data, error norms, and the fp64 finite-difference
// gradient check that every hand-written backward is held to.
#pragma once

#include "core/philox.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sambay::testing {

// n values from N(0, scale^2) (or uniform in [lo, hi)), reproducible from seed.
std::vector<double> random_normal(int64_t n, uint64_t seed, double scale = 1.0);
std::vector<double> random_uniform(int64_t n, uint64_t seed, double lo, double hi);

std::vector<float> to_f32(const std::vector<double>& v);
std::vector<double> to_f64(const std::vector<float>& v);

// ||a - b|| / max(||b||, tiny), over all elements.
double relative_error(const std::vector<double>& a, const std::vector<double>& b);
double relative_error(const std::vector<float>& a, const std::vector<double>& b);

// One input of the function under test: its values (perturbed in place by the check) and the
// analytic gradient that the backward produced for it.
struct GradInput {
  std::string name;
  std::vector<double>* value;
  const std::vector<double>* grad;
};

// The same for a parameter that lives inside a larger buffer (e.g. the model's flat
// parameter vector): n values at `value`, analytic gradient at `grad`.
struct GradSpan {
  std::string name;
  double* value;
  const double* grad;
  int64_t n;
};

// Finite differences (five-point stencil) of `loss` (a function of the current values of every input) at up
// to `samples_per_input` elements of each input, against the analytic gradients. Fails the test
// with the input's name, the relative error and the worst element when the normwise relative
// error exceeds `tolerance`. Elements are chosen reproducibly; all of them if there are few.
void expect_gradients_match(const std::function<double()>& loss,
                            const std::vector<GradInput>& inputs, double tolerance = 1e-6,
                            int samples_per_input = 48, double step = 1e-5);
void expect_gradients_match(const std::function<double()>& loss,
                            const std::vector<GradSpan>& inputs, double tolerance = 1e-6,
                            int samples_per_input = 48, double step = 1e-5);

// sum_i a[i] * b[i]: the scalar loss that makes `probe` the output gradient.
double dot(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace sambay::testing
