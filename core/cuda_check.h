// Error checking for CUDA calls. Usable from .cu files, which must not include fmt (nvcc cannot
// compile its consteval format checks); the message is built on the host side.
#pragma once

#include <cuda_runtime.h>

namespace sambay {
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
}

#define SAMBAY_CUDA_CHECK(expr)                                                 \
  do {                                                                          \
    cudaError_t sambay_err_ = (expr);                                           \
    if (sambay_err_ != cudaSuccess)                                             \
      ::sambay::throw_cuda_error(sambay_err_, #expr, __FILE__, __LINE__);       \
  } while (0)

// After a kernel launch: catches bad launch configurations at the launch site.
#define SAMBAY_CUDA_CHECK_LAUNCH() SAMBAY_CUDA_CHECK(cudaGetLastError())
