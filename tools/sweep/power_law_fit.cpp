#include "tools/sweep/power_law_fit.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace sambay::sweep {

namespace {

// Best A' and E for fixed alpha: linear least squares of L on x = c^(-alpha) and a constant
// (centered sums, which stay accurate when x barely varies); with E >= 0 required and the free
// optimum below zero, the line through the origin instead. Returns the residual sum.
double solve_linear(const std::vector<double>& logc, const std::vector<double>& L, double alpha,
                    bool nonnegative_e, double& a, double& e) {
  const size_t n = L.size();
  std::vector<double> x(n);
  double mx = 0, ml = 0;
  for (size_t i = 0; i < n; ++i) {
    x[i] = std::exp(-alpha * logc[i]);
    mx += x[i];
    ml += L[i];
  }
  mx /= n, ml /= n;
  double sxx = 0, sxl = 0;
  for (size_t i = 0; i < n; ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxl += (x[i] - mx) * (L[i] - ml);
  }
  a = sxx > 0 ? sxl / sxx : 0;
  e = ml - a * mx;
  if (nonnegative_e && e < 0) {
    double xx = 0, xl = 0;
    for (size_t i = 0; i < n; ++i) xx += x[i] * x[i], xl += x[i] * L[i];
    a = xl / xx;
    e = 0;
  }
  double ss = 0;
  for (size_t i = 0; i < n; ++i) {
    const double r = L[i] - (a * x[i] + e);
    ss += r * r;
  }
  return ss;
}

}  // namespace

PowerLawFit fit_power_law(const std::vector<double>& C, const std::vector<double>& L,
                          const PowerLawFitOptions& opt) {
  SAMBAY_CHECK(C.size() == L.size(), "{} compute values for {} losses", C.size(), L.size());
  SAMBAY_CHECK(opt.alpha_min > 0 && opt.alpha_max > opt.alpha_min && opt.scan_points >= 3,
               "bad alpha range [{}, {}] / {} points", opt.alpha_min, opt.alpha_max, opt.scan_points);
  std::set<double> distinct;
  double mean_log = 0;
  for (size_t i = 0; i < C.size(); ++i) {
    if (!(C[i] > 0) || !std::isfinite(C[i])) fail("point {}: compute {} is not positive and finite", i, C[i]);
    if (!std::isfinite(L[i])) fail("point {}: loss {} is not finite", i, L[i]);
    distinct.insert(C[i]);
    mean_log += std::log(C[i]);
  }
  if (distinct.size() < 3)
    fail("a fit of A, alpha and E needs at least 3 distinct compute values, got {}", distinct.size());
  mean_log /= C.size();
  std::vector<double> logc(C.size());
  for (size_t i = 0; i < C.size(); ++i) logc[i] = std::log(C[i]) - mean_log;

  double a = 0, e = 0;
  auto residual = [&](double alpha) { return solve_linear(logc, L, alpha, opt.nonnegative_E, a, e); };
  // Scan alpha log-uniformly, then refine between the best point's neighbours.
  const double l0 = std::log(opt.alpha_min), l1 = std::log(opt.alpha_max);
  const int n = opt.scan_points;
  int best = 0;
  double best_ss = INFINITY;
  for (int i = 0; i < n; ++i) {
    const double ss = residual(std::exp(l0 + (l1 - l0) * i / (n - 1)));
    if (ss < best_ss) best_ss = ss, best = i;
  }
  double lo = std::exp(l0 + (l1 - l0) * std::max(best - 1, 0) / (n - 1));
  double hi = std::exp(l0 + (l1 - l0) * std::min(best + 1, n - 1) / (n - 1));
  const double g = (std::sqrt(5.0) - 1) / 2;
  double x1 = hi - g * (hi - lo), x2 = lo + g * (hi - lo);
  double f1 = residual(x1), f2 = residual(x2);
  for (int it = 0; it < 200 && hi - lo > 1e-15 * hi; ++it) {
    if (f1 < f2) {
      hi = x2, x2 = x1, f2 = f1, x1 = hi - g * (hi - lo), f1 = residual(x1);
    } else {
      lo = x1, x1 = x2, f1 = f2, x2 = lo + g * (hi - lo), f2 = residual(x2);
    }
  }
  PowerLawFit fit;
  fit.alpha = 0.5 * (lo + hi);
  const double ss = residual(fit.alpha);
  // Undo the normalisation: A' c^(-alpha) with c = C / exp(mean_log).
  fit.A = a * std::exp(fit.alpha * mean_log);
  fit.E = e;
  fit.E_at_zero = opt.nonnegative_E && e == 0;
  fit.alpha_at_range_edge = best == 0 || best == n - 1;
  fit.points = static_cast<int>(L.size());
  fit.rms_residual = std::sqrt(ss / L.size());
  double ml = 0, tot = 0;
  for (double l : L) ml += l;
  ml /= L.size();
  for (double l : L) tot += (l - ml) * (l - ml);
  fit.r_squared = tot > 0 ? 1 - ss / tot : 1;
  return fit;
}

double power_law(const PowerLawFit& fit, double C) { return fit.A * std::pow(C, -fit.alpha) + fit.E; }

}  // namespace sambay::sweep
