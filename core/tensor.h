// Tensors are non-owning views: a pointer, a dtype, a device, a shape and strides (in elements).
// Memory is owned by an Arena (core/arena.h); a Tensor never frees anything.
#pragma once

#include "core/bf16.h"
#include "core/check.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace sambay {

enum class DType : uint8_t { f32, f64, bf16, i32, i64 };
enum class Device : uint8_t { cpu, cuda };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

struct Tensor {
  static constexpr int kMaxDims = 6;

  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t size(int dim) const;
  bool is_contiguous() const;
  std::string describe() const;  // e.g. "f32[4, 128] cpu"

  // Typed pointer; throws if T does not match dtype.
  template <typename T> T* ptr() const {
    SAMBAY_CHECK(dtype == dtype_of<T>(), "tensor is {}, accessed as {}", dtype_name(dtype),
                 dtype_name(dtype_of<T>()));
    return static_cast<T*>(data);
  }

  // Same memory, new shape; the tensor must be contiguous and the element count unchanged.
  Tensor reshape(std::initializer_list<int64_t> new_shape) const;
  // Elements [start, start + length) along dim; shares memory.
  Tensor slice(int dim, int64_t start, int64_t length) const;
};

// A contiguous view over existing memory.
Tensor tensor_view(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape);

}  // namespace sambay
