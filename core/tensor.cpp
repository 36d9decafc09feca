#include "core/tensor.h"

#include <fmt/format.h>

namespace sambay {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
  }
  fail("unknown dtype {}", static_cast<int>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

int64_t Tensor::size(int dim) const {
  SAMBAY_CHECK(dim >= 0 && dim < ndim, "dim {} out of range for {}", dim, describe());
  return shape[dim];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string Tensor::describe() const {
  std::string dims;
  for (int i = 0; i < ndim; ++i) dims += fmt::format("{}{}", i ? ", " : "", shape[i]);
  return fmt::format("{}[{}] {}", dtype_name(dtype), dims, device_name(device));
}

static void set_contiguous_shape(Tensor& t, std::initializer_list<int64_t> shape) {
  SAMBAY_CHECK(static_cast<int>(shape.size()) <= Tensor::kMaxDims, "at most {} dims, got {}",
               Tensor::kMaxDims, shape.size());
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) {
    SAMBAY_CHECK(s >= 0, "negative dimension {}", s);
    t.shape[i++] = s;
  }
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
}

Tensor tensor_view(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  set_contiguous_shape(t, shape);
  return t;
}

Tensor Tensor::reshape(std::initializer_list<int64_t> new_shape) const {
  SAMBAY_CHECK(is_contiguous(), "reshape of a non-contiguous tensor {}", describe());
  Tensor t = *this;
  set_contiguous_shape(t, new_shape);
  SAMBAY_CHECK(t.numel() == numel(), "reshape of {} to {} elements", describe(), t.numel());
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t length) const {
  SAMBAY_CHECK(dim >= 0 && dim < ndim, "slice dim {} of {}", dim, describe());
  SAMBAY_CHECK(start >= 0 && length >= 0 && start + length <= shape[dim],
               "slice [{}, {}) of dim {} of {}", start, start + length, dim, describe());
  Tensor t = *this;
  t.data = static_cast<char*>(data) + static_cast<size_t>(start * strides[dim]) * dtype_size(dtype);
  t.shape[dim] = length;
  return t;
}

}  // namespace sambay
