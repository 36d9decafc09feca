// Host side of the Hopper tensor copies: CUtensorMap descriptors for bf16 tensors addressed as
// [d (contiguous), heads, positions, batch], read in boxes of 64 columns (128 bytes, the width of
// the 128-byte swizzle) x `rows` positions of one head and one batch row. The attention tensors
// and their strided views (differential attention) are all of this form.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace sambay::sm90 {

struct HeadTensor {
  const void* base;      // bf16, 16-byte aligned
  int64_t d;             // columns per head (a multiple of 64)
  int64_t heads;         // heads (the view's)
  int64_t positions;     // rows per batch row
  int64_t batch;
  int64_t head_stride;   // elements between heads (a multiple of 8)
  int64_t pos_stride;    // elements between positions (a multiple of 8)
  int64_t batch_stride;  // elements between batch rows (a multiple of 8)
};

// Throws (naming the field) when the tensor cannot be described (alignment, strides, sizes).
CUtensorMap make_head_tensor_map(const HeadTensor& t, int rows, const char* what);

// True when a pointer and strides (elements) meet the copy engine's 16-byte rules.
bool tma_compatible(const void* base, int64_t head_stride, int64_t pos_stride);

}  // namespace sambay::sm90
