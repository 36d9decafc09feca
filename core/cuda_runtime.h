// The few CUDA runtime calls the core needs, behind plain functions so that host-only code
// compiles without CUDA headers. In a CPU-only build each call (except the device count)
// throws an error saying the build has no CUDA.
#pragma once

#include "core/bf16.h"
#include "core/cuda_stream.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace sambay {

bool built_with_cuda();
// Number of usable CUDA devices: 0 in a CPU-only build or on a machine without a GPU.
int cuda_device_count();
// "NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB, cc 9.0" for the current device.
std::string cuda_device_description();
// Compute capability of the current device as 10 major + minor (90 for an H100 or H200).
int cuda_compute_capability();
void cuda_set_device(int device);

void* cuda_malloc(size_t bytes, const std::string& what);
void cuda_free(void* ptr);
void cuda_memset_zero(void* ptr, size_t bytes);
void cuda_copy_to_device(void* dst, const void* src, size_t bytes);
void cuda_copy_to_host(void* dst, const void* src, size_t bytes);
void cuda_synchronize();

// Stream-ordered versions (stream may be null: the default stream).
cudaStream_t cuda_stream_create();
void cuda_stream_destroy(cudaStream_t stream);
void cuda_stream_synchronize(cudaStream_t stream);
void cuda_memset_zero_async(void* ptr, size_t bytes, cudaStream_t stream);
void cuda_copy_async(void* dst, const void* src, size_t bytes, cudaStream_t stream);  // any direction
// Work enqueued on `waiter` from now on starts after what is enqueued on `producer` so far
// (an event recorded on producer, waited on by waiter; the host does not block).
void cuda_stream_wait(cudaStream_t waiter, cudaStream_t producer);

// Bytes of device memory in use (by every allocation of the process) and in total.
size_t cuda_memory_used();
size_t cuda_memory_total();

// fp32 -> bf16 with round-to-nearest-even, on the GPU (pointers are device memory).
void convert_to_bf16_cuda(const float* in, bf16* out, int64_t n);

}  // namespace sambay
