// CPU-only build: the CUDA entry points exist so that callers link, and fail clearly if used.
#include "core/check.h"
#include "core/cuda_runtime.h"

namespace sambay {

[[noreturn]] static void no_cuda(const char* what) {
  fail("{}: this sambay was built without CUDA (configure with SAMBAY_CUDA=ON on a machine with "
       "nvcc)",
       what);
}

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_description() { no_cuda("cuda_device_description"); }
int cuda_compute_capability() { no_cuda("cuda_compute_capability"); }
void cuda_set_device(int) { no_cuda("cuda_set_device"); }
void* cuda_malloc(size_t, const std::string&) { no_cuda("cuda_malloc"); }
void cuda_free(void*) { no_cuda("cuda_free"); }
void cuda_memset_zero(void*, size_t) { no_cuda("cuda_memset_zero"); }
void cuda_copy_to_device(void*, const void*, size_t) { no_cuda("cuda_copy_to_device"); }
void cuda_copy_to_host(void*, const void*, size_t) { no_cuda("cuda_copy_to_host"); }
void cuda_synchronize() { no_cuda("cuda_synchronize"); }
cudaStream_t cuda_stream_create() { no_cuda("cuda_stream_create"); }
void cuda_stream_destroy(cudaStream_t) { no_cuda("cuda_stream_destroy"); }
void cuda_stream_synchronize(cudaStream_t) { no_cuda("cuda_stream_synchronize"); }
void cuda_memset_zero_async(void*, size_t, cudaStream_t) { no_cuda("cuda_memset_zero_async"); }
void cuda_copy_async(void*, const void*, size_t, cudaStream_t) { no_cuda("cuda_copy_async"); }
void cuda_stream_wait(cudaStream_t, cudaStream_t) { no_cuda("cuda_stream_wait"); }
size_t cuda_memory_used() { no_cuda("cuda_memory_used"); }
size_t cuda_memory_total() { no_cuda("cuda_memory_total"); }
void convert_to_bf16_cuda(const float*, bf16*, int64_t) { no_cuda("convert_to_bf16_cuda"); }

}  // namespace sambay
