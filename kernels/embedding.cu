// Token embedding on the GPU.
// Forward: one block per token copies its table row (16-byte accesses when aligned).
//   Bytes: 4 n d (2 read, 2 written).
// Backward, deterministic without atomics:
//   1. a stable radix sort (cub) of (token, position) pairs puts the positions of each distinct
//      token next to each other, in increasing position order;
//   2. one block per sorted slot; a block whose slot starts a run of equal tokens sums the dout
//      rows of the run in fp32, in position order, and adds the sum into dtable once.
//   Bytes: 2 n d (dout) + 8 (distinct tokens) d (dtable read and written) + the sort's few n.
#include "kernels/embedding.h"

#include <cub/device/device_radix_sort.cuh>

#include <climits>

#include "kernels/cuda_util.cuh"

namespace sambay {
namespace {

using cuda::bf16_t;

constexpr int kThreads = 128;

template <int W>
__global__ void embedding_forward_kernel(const int32_t* tokens, const bf16_t* table, bf16_t* out,
                                         int64_t vocab, int64_t d) {
  const int64_t i = blockIdx.x;
  const int32_t token = tokens[i];
  const bool valid = token >= 0 && token < vocab;
  const bf16_t* src = table + (valid ? token : 0) * d;
  bf16_t* dst = out + i * d;
  for (int64_t j = threadIdx.x * int64_t(W); j < d; j += int64_t(blockDim.x) * W) {
    float v[W];
    if (valid) {
      cuda::load_bf16<W>(src + j, v);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) v[k] = __int_as_float(0x7fc00000);  // NaN
    }
    cuda::store_bf16<W>(dst + j, v);
  }
}

__global__ void iota_kernel(int32_t* values, int64_t n) {
  for (int64_t i = cuda::first_index(); i < n; i += cuda::grid_stride()) values[i] = int32_t(i);
}

// sorted_tokens / positions: the sort's output. Block b handles the run of equal tokens that
// starts at slot b, if one does.
template <int W>
__global__ void embedding_backward_kernel(const int32_t* sorted_tokens, const int32_t* positions,
                                          const bf16_t* dout, float* dtable, int64_t n,
                                          int64_t vocab, int64_t d) {
  const int64_t first = blockIdx.x;
  const int32_t token = sorted_tokens[first];
  if (first > 0 && sorted_tokens[first - 1] == token) return;  // not the start of a run
  if (token < 0 || token >= vocab) return;
  int64_t end = first + 1;
  while (end < n && sorted_tokens[end] == token) ++end;
  float* row = dtable + int64_t(token) * d;
  for (int64_t j = threadIdx.x * int64_t(W); j < d; j += int64_t(blockDim.x) * W) {
    float sum[W] = {};
    for (int64_t s = first; s < end; ++s) {
      float v[W];
      cuda::load_bf16<W>(dout + int64_t(positions[s]) * d + j, v);
#pragma unroll
      for (int k = 0; k < W; ++k) sum[k] += v[k];
    }
#pragma unroll
    for (int k = 0; k < W; ++k) row[j + k] += sum[k];
  }
}

}  // namespace

void embedding_forward_cuda(const int32_t* tokens, const bf16* table, bf16* out, int64_t n,
                            int64_t vocab, int64_t d, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0 && n < INT_MAX && vocab >= 1 && d >= 1,
                        "embedding: bad shape n=" + std::to_string(n) + " vocab=" +
                            std::to_string(vocab) + " d=" + std::to_string(d));
  if (n == 0) return;
  if (d % 8 == 0 && cuda::aligned16(table) && cuda::aligned16(out))
    embedding_forward_kernel<8><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        tokens, cuda::nv(table), cuda::nv(out), vocab, d);
  else
    embedding_forward_kernel<1><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        tokens, cuda::nv(table), cuda::nv(out), vocab, d);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

void embedding_backward_cuda(const int32_t* tokens, const bf16* dout, float* dtable, int64_t n,
                             int64_t vocab, int64_t d, cudaStream_t stream) {
  SAMBAY_CUDA_ARG_CHECK(n >= 0 && n < INT_MAX && vocab >= 1 && d >= 1,
                        "embedding: bad shape n=" + std::to_string(n) + " vocab=" +
                            std::to_string(vocab) + " d=" + std::to_string(d));
  if (n == 0) return;
  const int items = static_cast<int>(n);
  size_t sort_bytes = 0;
  SAMBAY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, tokens, (int32_t*)nullptr,
                                                    (const int32_t*)nullptr, (int32_t*)nullptr,
                                                    items, 0, 32, stream));
  // [sorted tokens | positions in | positions out | sort workspace], each part 256-byte aligned.
  const size_t slot = (sizeof(int32_t) * n + 255) / 256 * 256;
  cuda::DeviceScratch scratch(3 * slot + sort_bytes, stream);
  char* base = scratch.as<char>();
  int32_t* sorted_tokens = reinterpret_cast<int32_t*>(base);
  int32_t* positions_in = reinterpret_cast<int32_t*>(base + slot);
  int32_t* positions = reinterpret_cast<int32_t*>(base + 2 * slot);
  void* sort_workspace = base + 3 * slot;

  iota_kernel<<<cuda::grid_size(n, 256, 1024), 256, 0, stream>>>(positions_in, n);
  SAMBAY_CUDA_CHECK_LAUNCH();
  SAMBAY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_workspace, sort_bytes, tokens,
                                                    sorted_tokens, positions_in, positions, items,
                                                    0, 32, stream));
  if (d % 8 == 0 && cuda::aligned16(dout) && cuda::aligned16(dtable))
    embedding_backward_kernel<8><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        sorted_tokens, positions, cuda::nv(dout), dtable, n, vocab, d);
  else
    embedding_backward_kernel<1><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        sorted_tokens, positions, cuda::nv(dout), dtable, n, vocab, d);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

}  // namespace sambay
