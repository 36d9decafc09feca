#include "core/arena.h"

#include "core/check.h"
#include "core/cuda_runtime.h"

#include <cstdlib>
#include <cstring>
#include <utility>

namespace sambay {

constexpr size_t kAlignment = 256;

static size_t align_up(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

Arena::Arena(Device device_, size_t capacity_bytes, std::string name_)
    : device(device_), name(std::move(name_)), capacity(align_up(capacity_bytes)) {
  if (capacity == 0) return;
  if (device == Device::cpu) {
    base = static_cast<std::byte*>(std::aligned_alloc(kAlignment, capacity));
    if (!base)
      fail("arena '{}': cannot allocate {:.2f} GiB of host memory (reduce --micro_batch, "
           "--seq_len or the model's sizes)",
           name, capacity / 1073741824.0);
  } else {
    base = static_cast<std::byte*>(cuda_malloc(capacity, name));
  }
}

Arena Arena::measuring(std::string name) {
  Arena a;
  a.name = std::move(name);
  a.measure_only = true;
  a.capacity = SIZE_MAX;
  return a;
}

Arena::~Arena() {
  if (!base) return;
  if (device == Device::cpu)
    std::free(base);
  else
    cuda_free(base);
}

Arena::Arena(Arena&& o) noexcept { *this = std::move(o); }

Arena& Arena::operator=(Arena&& o) noexcept {
  std::swap(device, o.device);
  std::swap(name, o.name);
  std::swap(base, o.base);
  std::swap(capacity, o.capacity);
  std::swap(used, o.used);
  std::swap(high_water, o.high_water);
  std::swap(measure_only, o.measure_only);
  return *this;
}

Tensor Arena::alloc(DType dtype, std::initializer_list<int64_t> shape) {
  Tensor t = tensor_view(nullptr, dtype, device, shape);
  size_t bytes = align_up(t.nbytes());
  SAMBAY_CHECK(measure_only || used + bytes <= capacity,
               "arena '{}' ({} device) is out of memory: {} needs {} bytes, {} of {} in use",
               name, device_name(device), t.describe(), bytes, used, capacity);
  t.data = measure_only ? nullptr : base + used;
  used += bytes;
  if (used > high_water) high_water = used;
  return t;
}

void Arena::release_to(size_t mark) {
  SAMBAY_CHECK(mark <= used, "arena '{}': release to {} beyond the {} bytes in use", name, mark,
               used);
  used = mark;
}

void zero(const Tensor& t) {
  SAMBAY_CHECK(t.is_contiguous(), "zero() of a non-contiguous tensor {}", t.describe());
  if (t.device == Device::cpu)
    std::memset(t.data, 0, t.nbytes());
  else
    cuda_memset_zero(t.data, t.nbytes());
}

}  // namespace sambay
