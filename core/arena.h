// Arena: one large allocation, handed out by bumping an offset. Activations, parameters and
// gradients each live in an arena sized up front, so a step never calls malloc/cudaMalloc and
// peak memory is known before training starts.
#pragma once

#include "core/tensor.h"

#include <cstddef>
#include <string>

namespace sambay {

struct Arena {
  Device device = Device::cpu;
  std::string name;  // appears in out-of-memory messages
  std::byte* base = nullptr;
  size_t capacity = 0;
  size_t used = 0;
  size_t high_water = 0;

  bool measure_only = false;  // hands out null tensors and only counts bytes (planning)

  Arena() = default;
  // An arena that allocates nothing and records how much the same allocations would need.
  static Arena measuring(std::string name);
  Arena(Device device, size_t capacity_bytes, std::string name);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& other) noexcept;
  Arena& operator=(Arena&& other) noexcept;

  // A contiguous tensor, 256-byte aligned. Contents are not initialised.
  Tensor alloc(DType dtype, std::initializer_list<int64_t> shape);
  // Rewind to an earlier `used` (a mark): everything allocated after it is released.
  void release_to(size_t mark);
};

// Zero a tensor's bytes on its device.
void zero(const Tensor& t);

}  // namespace sambay
