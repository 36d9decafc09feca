// Device buffers for GPU tests: upload host vectors, download results, poison outputs so that
// an element a kernel never wrote fails the comparison.
#pragma once

#include "core/bf16.h"
#include "core/cuda_runtime.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace sambay::testing {

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  int64_t n = 0;

  explicit DeviceBuffer(int64_t count) : n(count) {
    ptr = static_cast<T*>(cuda_malloc(sizeof(T) * std::max<int64_t>(count, 1), "test buffer"));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(static_cast<int64_t>(host.size())) {
    upload(host);
  }
  ~DeviceBuffer() { cuda_free(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void upload(const std::vector<T>& host) {
    cuda_copy_to_device(ptr, host.data(), sizeof(T) * static_cast<size_t>(n));
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    cuda_synchronize();
    cuda_copy_to_host(host.data(), ptr, sizeof(T) * static_cast<size_t>(n));
    return host;
  }
  // Fills every byte with 0xFF: a NaN in fp32 and bf16, so unwritten outputs cannot pass.
  void poison() {
    std::vector<unsigned char> bytes(sizeof(T) * static_cast<size_t>(n), 0xFF);
    cuda_copy_to_device(ptr, bytes.data(), bytes.size());
  }
  void zero() { cuda_memset_zero(ptr, sizeof(T) * static_cast<size_t>(n)); }
};

// bf16 <-> double vectors (values are rounded to bf16 on the way in).
inline std::vector<bf16> to_bf16_vector(const std::vector<double>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_bf16(static_cast<float>(v[i]));
  return out;
}
inline std::vector<double> bf16_to_f64(const std::vector<bf16>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_float(v[i]);
  return out;
}
// The values a bf16 upload actually holds: what the CPU reference must be given.
inline std::vector<double> round_to_bf16(const std::vector<double>& v) {
  return bf16_to_f64(to_bf16_vector(v));
}

}  // namespace sambay::testing
