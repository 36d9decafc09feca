#include "kernels/column_reduce.cuh"

#include "kernels/cuda_util.cuh"

namespace sambay::cuda {
namespace {

// A 32 x 32 block: threadIdx.x picks the column, threadIdx.y strides over the parts; the 32
// per-thread sums of a column are then added in order by one thread. Reads are coalesced along
// the columns. Bytes: parts * cols * 4 read.
__global__ void add_partial_column_sums_kernel(const float* partials, int64_t parts,
                                               int64_t cols, float* out) {
  __shared__ float sums[32][33];
  const int64_t j = blockIdx.x * 32 + threadIdx.x;
  float s = 0.0f;
  if (j < cols)
    for (int64_t p = threadIdx.y; p < parts; p += 32) s += partials[p * cols + j];
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    float total = 0.0f;
    for (int y = 0; y < 32; ++y) total += sums[y][threadIdx.x];
    out[j] += total;
  }
}

// Grid (column blocks of 256, row parts): each thread sums one column over its part's rows.
__global__ void partial_column_sums_kernel(const __nv_bfloat16* x, int64_t rows, int64_t cols,
                                           int64_t rows_per_part, float* partials) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_part;
  const int64_t r1 = r0 + rows_per_part < rows ? r0 + rows_per_part : rows;
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += __bfloat162float(x[r * cols + j]);
  partials[blockIdx.y * cols + j] = s;
}

}  // namespace

void add_partial_column_sums(const float* partials, int64_t parts, int64_t cols, float* out,
                             cudaStream_t stream) {
  if (cols == 0) return;
  add_partial_column_sums_kernel<<<grid_size(cols, 32), dim3(32, 32), 0, stream>>>(
      partials, parts, cols, out);
  SAMBAY_CUDA_CHECK_LAUNCH();
}

void add_column_sums(const __nv_bfloat16* x, int64_t rows, int64_t cols, float* out,
                     cudaStream_t stream) {
  if (cols == 0 || rows == 0) return;
  // About 64 rows a part, at most 256 parts: enough blocks to fill the GPU for the model's
  // shapes, and a partial buffer small next to x.
  const int64_t parts = rows < 64 * 256 ? (rows + 63) / 64 : 256;
  const int64_t rows_per_part = (rows + parts - 1) / parts;
  DeviceScratch partials(sizeof(float) * parts * cols, stream);
  const int threads = 256;
  partial_column_sums_kernel<<<dim3(grid_size(cols, threads), static_cast<unsigned>(parts)),
                               threads, 0, stream>>>(x, rows, cols, rows_per_part,
                                                     partials.as<float>());
  SAMBAY_CUDA_CHECK_LAUNCH();
  add_partial_column_sums(partials.as<float>(), parts, cols, out, stream);
}

}  // namespace sambay::cuda
