// Column sums for the backward passes of ops whose parameters are shared by every row (norm
// weights and biases, linear biases), on the GPU and without atomics: the rows are split into
// parts, each part's column sums are written to a [parts, cols] fp32 buffer, and a second
// kernel adds the parts in a fixed order. Results are bitwise reproducible for a given shape and GPU.
// Host functions (streams ordered, pointers device memory); include from .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sambay::cuda {

// out[j] += sum over p < parts of partials[p * cols + j]
void add_partial_column_sums(const float* partials, int64_t parts, int64_t cols, float* out,
                             cudaStream_t stream);

// out[j] += sum over rows r of x[r * cols + j] (x bf16 [rows, cols], sums in fp32).
void add_column_sums(const __nv_bfloat16* x, int64_t rows, int64_t cols, float* out,
                     cudaStream_t stream);

}  // namespace sambay::cuda
