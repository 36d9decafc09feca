// Fits the compute scaling law with an irreducible term, L(C) = A * C^(-alpha) + E, by least
// squares on L (the form the SambaY paper fits to its depth-scaling runs).
//
// Method (variable projection): for a fixed alpha the model is linear in A and E, so the best
// A and E have a closed form; what is left is a one-dimensional search of the residual over
// alpha (a log-spaced scan, then golden-section refinement around the best point). This finds
// the global least-squares minimum over alpha in the scanned range, needs no starting guess,
// and is exact on noiseless data. C is divided by its geometric mean inside, so that C^(-alpha)
// stays well scaled for FLOP counts near 1e20. E is kept >= 0 by default (a loss cannot fall
// below zero): for each alpha the constrained optimum is the unconstrained one when its E is
// >= 0 and E = 0 otherwise (the problem is convex in A and E).
#pragma once

#include <vector>

namespace sambay::sweep {

struct PowerLawFit {
  double A = 0, alpha = 0, E = 0;
  double rms_residual = 0;  // sqrt(mean squared residual of L)
  double r_squared = 0;     // 1 - SS_res / SS_tot
  int points = 0;
  bool alpha_at_range_edge = false;  // the best alpha is a bound of the search: not determined
  bool E_at_zero = false;            // the constraint E >= 0 is active
};

struct PowerLawFitOptions {
  double alpha_min = 1e-4, alpha_max = 4.0;  // the alpha range searched
  int scan_points = 4000;
  bool nonnegative_E = true;
};

// C > 0 and finite L for every point, at least 3 points with distinct C; throws otherwise.
PowerLawFit fit_power_law(const std::vector<double>& C, const std::vector<double>& L,
                          const PowerLawFitOptions& options = {});

double power_law(const PowerLawFit& fit, double C);  // A * C^(-alpha) + E

}  // namespace sambay::sweep
