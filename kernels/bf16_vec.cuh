// Device helpers shared by the Mamba kernels: a few bf16 channels at a time, as one 8- or 16-byte
// access where the row is aligned for it, element by element at the ragged end of a row.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <string>

#include "core/bf16.h"
#include "core/cuda_check.h"

namespace sambay::cuda {

// Vector of V = 4 or 8 bf16 values moved as one 8- or 16-byte access.
template <int V>
struct Bf16Vec;
template <>
struct Bf16Vec<4> {
  using Raw = uint2;
};
template <>
struct Bf16Vec<8> {
  using Raw = uint4;
};

// Loads p[0..count) (count <= V) as floats; the rest of v is zero. `aligned` says that p is
// aligned to the whole vector, which permits one vector load when all V are wanted.
template <int V>
__device__ inline void load_vec(const bf16* p, int count, bool aligned, float v[V]) {
  using Raw = typename Bf16Vec<V>::Raw;
  if (aligned && count == V) {
    const Raw raw = *reinterpret_cast<const Raw*>(p);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      const float2 f = __bfloat1622float2(pairs[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = i < count ? to_float(p[i]) : 0.f;
}

// Stores v[0..count) to p, rounding to nearest even.
template <int V>
__device__ inline void store_vec(bf16* p, int count, bool aligned, const float v[V]) {
  using Raw = typename Bf16Vec<V>::Raw;
  if (aligned && count == V) {
    Raw raw;
    __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < V / 2; ++i) pairs[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<Raw*>(p) = raw;
    return;
  }
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (i < count) p[i] = to_bf16(v[i]);
}

// p[i] += v[i] for the first count elements, the sum formed in fp32 and rounded once.
template <int V>
__device__ inline void accumulate_vec(bf16* p, int count, bool aligned, const float v[V]) {
  float old[V];
  load_vec<V>(p, count, aligned, old);
#pragma unroll
  for (int i = 0; i < V; ++i) old[i] += v[i];
  store_vec<V>(p, count, aligned, old);
}

__device__ inline float sigmoid(float v) { return 1.f / (1.f + __expf(-v)); }

// 2^v on the special-function unit (relative error about 2^-22; underflows to 0 for v < -126).
__device__ inline float exp2_approx(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

// A bad argument from host code in a .cu file (which cannot use SAMBAY_CHECK): thrown as the
// same sambay::Error, the message naming the function and the value.
inline void require(bool ok, const std::string& message) {
  if (!ok) throw_cuda_error(cudaErrorInvalidValue, message.c_str(), __FILE__, __LINE__);
}

}  // namespace sambay::cuda
