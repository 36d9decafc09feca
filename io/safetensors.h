// The safetensors format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON, then the tensors' bytes back to back. The header maps each tensor name to
//   {"dtype": "F32" | "BF16" | ..., "shape": [...], "data_offsets": [begin, end]}
// (byte offsets into the data that follows the header) plus an optional "__metadata__" object of
// strings. Data is little-endian and row-major; the offsets cover the data exactly, without gaps
// or overlaps. sambay reads F32 and BF16 tensors and writes either.
#pragma once

#include "io/mapped_file.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sambay {

struct SafetensorsTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte range in the data section
};

struct SafetensorsFile {
  MappedFile file;
  std::vector<SafetensorsTensor> tensors;  // in header order
  std::vector<std::pair<std::string, std::string>> metadata;
  const uint8_t* data = nullptr;  // start of the data section
  int64_t data_bytes = 0;

  const std::string& path() const { return file.path; }
  const SafetensorsTensor* find(const std::string& name) const;
  // The tensor's values as float32: F32 copied, BF16 widened exactly; other dtypes throw.
  void read_f32(const SafetensorsTensor& t, float* out) const;
};

// Maps and validates the whole file; every problem throws naming the file (and tensor).
SafetensorsFile open_safetensors(const std::string& path);

struct SafetensorsEntry {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;  // shape's element count values
};

// Writes the tensors in the given order, as "F32" or "BF16" (rounded to nearest even), with
// `metadata` as "__metadata__". The file appears atomically.
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& tensors,
                       bool bf16, const std::vector<std::pair<std::string, std::string>>& metadata);

}  // namespace sambay
