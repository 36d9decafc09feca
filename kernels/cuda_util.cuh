// Device-side helpers shared by the CUDA ops (include from .cu files only): bf16 packs of 8 for
// 16-byte accesses, warp and block sums in a fixed order, the SiLU scalar functions,
// stream-ordered scratch memory, and the register layout of the per-row kernels.
// Header-only, so that optim/*.cu can use it without linking the kernels library.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "core/bf16.h"
#include "core/cuda_check.h"
#include "kernels/cuda_errors.h"

namespace sambay::cuda {

using bf16_t = __nv_bfloat16;

// sambay::bf16 and __nv_bfloat16 hold the same 16 bits.
inline const bf16_t* nv(const bf16* p) { return reinterpret_cast<const bf16_t*>(p); }
inline bf16_t* nv(bf16* p) { return reinterpret_cast<bf16_t*>(p); }

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Grid size for `work` items at `per_block` items a block, capped at `max_blocks` (the kernels
// that take a capped grid loop with a grid stride).
inline unsigned grid_size(int64_t work, int64_t per_block, int64_t max_blocks = 1 << 30) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks);
}

// The number of blocks of `kernel` (at `threads` threads a block) that the GPU holds at once: the
// grid of a persistent kernel whose blocks each walk a share of the work. The split, and with it
// the summation order of such a kernel, is fixed for a given GPU model and shape.
template <typename Kernel>
int64_t resident_blocks(Kernel kernel, int threads, size_t dynamic_smem = 0) {
  int device = 0, sms = 0, per_sm = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&device));
  SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  SAMBAY_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, dynamic_smem));
  return int64_t(per_sm > 0 ? per_sm : 1) * sms;
}

// ---------------------------------------------------------------------------------------------
// bf16 values in fp32 registers, W = 8 at a time (one 16-byte access, which needs a 16-byte
// aligned address) or W = 1.

template <int W>
__device__ __forceinline__ void load_bf16(const bf16_t* p, float (&v)[W]) {
  if constexpr (W == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x;
      v[2 * k + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) v[k] = __bfloat162float(p[k]);
  }
}

template <int W>
__device__ __forceinline__ void store_bf16(bf16_t* p, const float (&v)[W]) {
  if constexpr (W == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) p[k] = __float2bfloat16_rn(v[k]);
  }
}

// The value a bf16 store of x would hold, as fp32.
__device__ __forceinline__ float round_bf16(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}

// ---------------------------------------------------------------------------------------------
// SiLU, as kernels/silu_scalar.h computes it (expf, not the fast __expf: the results are compared
// with an fp64 reference). For very negative x, expf(-x) overflows to inf and sigmoid is 0.

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x * sigmoid(x); }
__device__ __forceinline__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

// ---------------------------------------------------------------------------------------------
// Reductions. Every shuffle pattern and every sum over warps runs in a fixed order, so results
// are bitwise reproducible run to run.

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sums a and b over the block (blockDim.x a multiple of 32, at most 1024); every thread gets both
// totals. Every thread of the block must call it (it synchronises).
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float2 warp_totals[32];
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // the previous call's readers are done with warp_totals
  if (lane == 0) warp_totals[warp] = make_float2(a, b);
  __syncthreads();
  float2 total = make_float2(0.0f, 0.0f);
  for (int w = 0; w < warps; ++w) total.x += warp_totals[w].x, total.y += warp_totals[w].y;
  return total;
}

__device__ __forceinline__ float block_sum(float a) { return block_sum2(a, 0.0f).x; }

// ---------------------------------------------------------------------------------------------
// Elementwise kernels take values in packs of W (8: one 16-byte access; 1: any alignment) and
// walk the packs with a grid stride. launch_packs picks W and the grid and calls
// launch(std::integral_constant<int, W>{}, grid, threads); the kernel handles `items / W` packs.

constexpr int kElementwiseThreads = 256;
constexpr int64_t kElementwiseMaxBlocks = 8192;

template <typename Launch>
void launch_packs(int64_t items, bool vector_ok, Launch&& launch) {
  if (items == 0) return;
  if (vector_ok && items % 8 == 0)
    launch(std::integral_constant<int, 8>{},
           grid_size(items / 8, kElementwiseThreads, kElementwiseMaxBlocks), kElementwiseThreads);
  else
    launch(std::integral_constant<int, 1>{},
           grid_size(items, kElementwiseThreads, kElementwiseMaxBlocks), kElementwiseThreads);
}

// Index of this thread's first pack and the grid stride, for the loops of elementwise kernels.
__device__ __forceinline__ int64_t first_index() {
  return blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

// ---------------------------------------------------------------------------------------------
// Stream-ordered scratch memory: allocated on `stream` with cudaMallocAsync and freed on it when
// the object goes out of scope, after the work already enqueued (which may still be running).
// The first use on a device raises its default memory pool's release threshold to "never", so
// that freed scratch stays in the pool instead of going back to the driver at every
// synchronisation (that setting applies to the whole process).

inline void keep_default_pool_memory() {
  static std::atomic<uint64_t> done_devices{0};
  int device = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? (uint64_t{1} << device) : 0;
  if (bit && (done_devices.load() & bit)) return;
  cudaMemPool_t pool;
  SAMBAY_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = UINT64_MAX;
  SAMBAY_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  done_devices.fetch_or(bit);
}

class DeviceScratch {
 public:
  DeviceScratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes == 0) return;
    keep_default_pool_memory();
    SAMBAY_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
  }
  ~DeviceScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// ---------------------------------------------------------------------------------------------
// Per-row kernels (norms, nGMU) give one block a row of d values and keep the row in registers:
// thread t owns the chunks c = t + i * blockDim.x (i < kChunks, c < d / W) of W consecutive
// values each. W = 8 loads and stores a chunk with one 16-byte access (needs d % 8 == 0 and
// 16-byte aligned rows); W = 1 is the general path for any d and alignment.

template <int W_, int kChunks_>
struct RowLayout {
  static constexpr int W = W_;
  static constexpr int kChunks = kChunks_;
};

// The slots of one row that this thread owns, as fp32 registers; unowned slots (past the row's
// end) hold 0 and are never stored.
template <int W, int kChunks>
struct RowSlice {
  float v[kChunks][W];

  __device__ static int column(int i) { return (threadIdx.x + i * blockDim.x) * W; }
  __device__ static bool owned(int i, int d) { return column(i) < d; }

  __device__ void load(const bf16_t* row, int d) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      if (owned(i, d)) {
        load_bf16<W>(row + column(i), v[i]);
      } else {
#pragma unroll
        for (int k = 0; k < W; ++k) v[i][k] = 0.0f;
      }
    }
  }
  // fp32 vectors (norm weights): plain loads, since the vector may sit anywhere in the
  // parameter buffer.
  __device__ void load(const float* vec, int d) {
#pragma unroll
    for (int i = 0; i < kChunks; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) v[i][k] = owned(i, d) ? vec[column(i) + k] : 0.0f;
  }
  __device__ void store(bf16_t* row, int d) const {
#pragma unroll
    for (int i = 0; i < kChunks; ++i)
      if (owned(i, d)) store_bf16<W>(row + column(i), v[i]);
  }
  // row += v, added in fp32 and rounded once.
  __device__ void add_to(bf16_t* row, int d) const {
#pragma unroll
    for (int i = 0; i < kChunks; ++i) {
      if (!owned(i, d)) continue;
      float old[W];
      load_bf16<W>(row + column(i), old);
#pragma unroll
      for (int k = 0; k < W; ++k) old[k] += v[i][k];
      store_bf16<W>(row + column(i), old);
    }
  }
  __device__ void zero() {
#pragma unroll
    for (int i = 0; i < kChunks; ++i)
#pragma unroll
      for (int k = 0; k < W; ++k) v[i][k] = 0.0f;
  }
  // Writes the owned slots to vec[column] (fp32, e.g. one block's partial column sums).
  __device__ void store(float* vec, int d) const {
#pragma unroll
    for (int i = 0; i < kChunks; ++i)
      if (owned(i, d))
#pragma unroll
        for (int k = 0; k < W; ++k) vec[column(i) + k] = v[i][k];
  }
};

// Blocks of at most this many threads run the per-row kernels (__launch_bounds__ of each), which
// leaves every thread 128 registers for its slices.
constexpr int kRowMaxThreads = 512;

// Picks the row layout for width d and calls launch(RowLayout<W, kChunks>{}, threads).
// vector_ok: every row pointer the kernel touches is 16-byte aligned (then d % 8 == 0 selects
// W = 8). Widths up to 16384 (multiples of 8) or 8192 (others) are supported.
template <typename Launch>
void with_row_layout(int64_t d, bool vector_ok, Launch&& launch) {
  auto threads = [](int64_t chunks, int per_thread) {
    const int64_t t = (chunks + per_thread - 1) / per_thread;
    return static_cast<int>(t <= 32 ? 32 : (t + 31) / 32 * 32);
  };
  if (vector_ok && d % 8 == 0) {
    const int64_t chunks = d / 8;
    if (chunks <= kRowMaxThreads) return launch(RowLayout<8, 1>{}, threads(chunks, 1));
    if (chunks <= 2 * kRowMaxThreads) return launch(RowLayout<8, 2>{}, threads(chunks, 2));
    if (chunks <= 4 * kRowMaxThreads) return launch(RowLayout<8, 4>{}, threads(chunks, 4));
  } else {
    if (d <= kRowMaxThreads) return launch(RowLayout<1, 1>{}, threads(d, 1));
    if (d <= 4 * kRowMaxThreads) return launch(RowLayout<1, 4>{}, threads(d, 4));
    if (d <= 16 * kRowMaxThreads) return launch(RowLayout<1, 16>{}, threads(d, 16));
  }
  fail_message("row width " + std::to_string(d) +
               " is wider than the per-row CUDA kernels support (16384 for multiples of 8 with "
               "16-byte aligned rows, 8192 otherwise)");
}

}  // namespace sambay::cuda
