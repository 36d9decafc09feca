// Scalar sigmoid and SiLU with its derivative, shared by the elementwise ops that gate with SiLU
// (activations, GMU) so that every one of them computes it the same way.
#pragma once

#include <cmath>

// In their own namespace so they cannot collide with file-local helpers of the same name.
namespace sambay::scalar {

// 1 / (1 + e^-x): for very negative x, e^-x overflows to inf and the result is a clean 0.
template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
inline T silu(T x) {
  return x * sigmoid(x);
}

// d/dx [x * s(x)] = s + x * s * (1 - s).
template <typename T>
inline T silu_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

}  // namespace sambay::scalar
