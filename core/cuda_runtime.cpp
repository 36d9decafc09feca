// Host side of the CUDA runtime wrappers (compiled by the C++ compiler, linked to cudart).
#include "core/cuda_runtime.h"

#include "core/check.h"
#include "core/cuda_check.h"

namespace sambay {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  fail("{}:{}: {} failed: {} ({})", file, line, expr, cudaGetErrorString(err),
       cudaGetErrorName(err));
}

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the "no device" error so later calls are not poisoned
    return 0;
  }
  return n;
}

std::string cuda_device_description() {
  int dev = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp p{};
  SAMBAY_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
  return fmt::format("{}, {} SMs, {:.1f} GiB, cc {}.{}", p.name, p.multiProcessorCount,
                     p.totalGlobalMem / 1073741824.0, p.major, p.minor);
}

int cuda_compute_capability() {
  int dev = 0, major = 0, minor = 0;
  SAMBAY_CUDA_CHECK(cudaGetDevice(&dev));
  SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  SAMBAY_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  return 10 * major + minor;
}

void cuda_set_device(int device) { SAMBAY_CUDA_CHECK(cudaSetDevice(device)); }

void* cuda_malloc(size_t bytes, const std::string& what) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    fail("cudaMalloc of {:.3f} GiB for '{}' failed ({}): {:.3f} GiB free of {:.3f} GiB",
         bytes / 1073741824.0, what, cudaGetErrorString(err), free_b / 1073741824.0,
         total_b / 1073741824.0);
  }
  return p;
}

void cuda_free(void* ptr) { cudaFree(ptr); }
void cuda_memset_zero(void* ptr, size_t bytes) { SAMBAY_CUDA_CHECK(cudaMemset(ptr, 0, bytes)); }
void cuda_copy_to_device(void* dst, const void* src, size_t bytes) {
  SAMBAY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void cuda_copy_to_host(void* dst, const void* src, size_t bytes) {
  SAMBAY_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void cuda_synchronize() { SAMBAY_CUDA_CHECK(cudaDeviceSynchronize()); }

cudaStream_t cuda_stream_create() {
  cudaStream_t s = nullptr;
  SAMBAY_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void cuda_stream_destroy(cudaStream_t stream) { cudaStreamDestroy(stream); }
void cuda_stream_synchronize(cudaStream_t stream) {
  SAMBAY_CUDA_CHECK(cudaStreamSynchronize(stream));
}
void cuda_stream_wait(cudaStream_t waiter, cudaStream_t producer) {
  cudaEvent_t event;
  SAMBAY_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  SAMBAY_CUDA_CHECK(cudaEventRecord(event, producer));
  SAMBAY_CUDA_CHECK(cudaStreamWaitEvent(waiter, event, 0));
  SAMBAY_CUDA_CHECK(cudaEventDestroy(event));  // released once the wait has completed
}
void cuda_memset_zero_async(void* ptr, size_t bytes, cudaStream_t stream) {
  SAMBAY_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream));
}
void cuda_copy_async(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  SAMBAY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream));
}

size_t cuda_memory_used() {
  size_t free_b = 0, total_b = 0;
  SAMBAY_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b - free_b;
}
size_t cuda_memory_total() {
  size_t free_b = 0, total_b = 0;
  SAMBAY_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  return total_b;
}

}  // namespace sambay
