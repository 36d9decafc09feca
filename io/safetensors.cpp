#include "io/safetensors.h"

#include "core/bf16.h"
#include "core/check.h"
#include "io/json.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace sambay {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100 << 20;  // the reference implementation's limit

// Bytes per element of the dtypes the format defines; 0 for an unknown name.
int64_t dtype_bytes(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

SafetensorsTensor parse_entry(const std::string& name, const Json& j, const std::string& path) {
  const std::string what = fmt::format("{}: tensor '{}'", path, name);
  if (!j.is_object()) fail("{}: header entry is not an object", what);
  SafetensorsTensor t;
  t.name = name;
  const Json* dtype = json_find(j, "dtype");
  const Json* shape = json_find(j, "shape");
  const Json* offsets = json_find(j, "data_offsets");
  if (!dtype || !shape || !offsets) fail("{}: needs dtype, shape and data_offsets", what);
  t.dtype = json_string(*dtype, what + " dtype");
  const int64_t esize = dtype_bytes(t.dtype);
  if (esize == 0) fail("{}: unknown dtype '{}'", what, t.dtype);
  if (!shape->is_array()) fail("{}: shape is not a list", what);
  int64_t numel = 1;
  for (const Json& s : *shape) {
    const int64_t dim = json_int(s, what + " shape");
    if (dim < 0) fail("{}: negative dimension {}", what, dim);
    if (dim > 0 && numel > std::numeric_limits<int64_t>::max() / esize / dim)
      fail("{}: shape too large", what);
    numel *= dim;
    t.shape.push_back(dim);
  }
  if (!offsets->is_array() || offsets->size() != 2)
    fail("{}: data_offsets is not [begin, end]", what);
  t.begin = json_int((*offsets)[0], what + " data_offsets");
  t.end = json_int((*offsets)[1], what + " data_offsets");
  if (t.begin < 0 || t.end < t.begin) fail("{}: bad data_offsets [{}, {}]", what, t.begin, t.end);
  if (t.end - t.begin != numel * esize)
    fail("{}: data_offsets [{}, {}] hold {} bytes, but {} of shape [{}] needs {}", what, t.begin,
         t.end, t.end - t.begin, t.dtype, fmt::join(t.shape, ", "), numel * esize);
  return t;
}

}  // namespace

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const SafetensorsTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void SafetensorsFile::read_f32(const SafetensorsTensor& t, float* out) const {
  const uint8_t* src = data + t.begin;
  if (t.dtype == "F32") {
    std::memcpy(out, src, t.end - t.begin);
  } else if (t.dtype == "BF16") {
    const int64_t n = (t.end - t.begin) / 2;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * i, 2);
      out[i] = to_float(bf16::from_bits(bits));
    }
  } else {
    fail("{}: tensor '{}' is {}; sambay reads F32 and BF16", path(), t.name, t.dtype);
  }
}

SafetensorsFile open_safetensors(const std::string& path) {
  SafetensorsFile f;
  f.file = MappedFile(path);
  if (f.file.size < 8) fail("{}: {} bytes, too short for a safetensors header", path, f.file.size);
  uint64_t n = 0;
  std::memcpy(&n, f.file.data, 8);
  if (n > kMaxHeaderBytes || n > f.file.size - 8)
    fail("{}: header length {} does not fit the file of {} bytes (truncated or not safetensors)",
         path, n, f.file.size);
  const std::string_view text(reinterpret_cast<const char*>(f.file.data) + 8, n);
  if (text.empty() || text[0] != '{') fail("{}: the header does not start with '{{'", path);
  const Json header = parse_json(text, path + " header");
  if (!header.is_object()) fail("{}: the header is not a JSON object", path);
  f.data = f.file.data + 8 + n;
  f.data_bytes = static_cast<int64_t>(f.file.size - 8 - n);
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("{}: __metadata__ is not an object", path);
      for (const auto& [k, v] : value.items())
        f.metadata.emplace_back(k, json_string(v, path + ": __metadata__." + k));
      continue;
    }
    f.tensors.push_back(parse_entry(name, value, path));
  }
  // The byte ranges must tile the data section exactly.
  std::vector<const SafetensorsTensor*> order;
  for (const SafetensorsTensor& t : f.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t at = 0;
  for (const SafetensorsTensor* t : order) {
    if (t->begin != at)
      fail("{}: tensor '{}' starts at byte {} of the data, expected {} ({})", path, t->name,
           t->begin, at, t->begin < at ? "overlap" : "gap");
    at = t->end;
  }
  if (at != f.data_bytes)
    fail("{}: the tensors cover {} bytes but the data section has {} ({})", path, at,
         f.data_bytes, at > f.data_bytes ? "file truncated" : "trailing bytes");
  return f;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       bool bf16_out, const std::vector<std::pair<std::string, std::string>>& metadata) {
  const int64_t esize = bf16_out ? 2 : 4;
  Json j = Json::object();
  if (!metadata.empty()) {
    Json& m = j["__metadata__"] = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  int64_t offset = 0;
  std::vector<int64_t> numels;
  for (const SafetensorsEntry& t : tensors) {
    int64_t numel = 1;
    for (int64_t s : t.shape) numel *= s;
    numels.push_back(numel);
    j[t.name] = {{"dtype", bf16_out ? "BF16" : "F32"},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + numel * esize}}};
    offset += numel * esize;
  }
  std::string header = j.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned

  AtomicFileWriter w(path);
  const uint64_t n = header.size();
  w.write(&n, 8);
  w.write(header.data(), header.size());
  std::vector<uint16_t> bits;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!bf16_out) {
      w.write(tensors[i].data, numels[i] * 4);
      continue;
    }
    bits.resize(numels[i]);
    for (int64_t j = 0; j < numels[i]; ++j) bits[j] = to_bf16(tensors[i].data[j]).bits;
    w.write(bits.data(), bits.size() * 2);
  }
  w.commit();
}

}  // namespace sambay
