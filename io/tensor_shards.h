// Global tensors stored as pieces spread over per-rank HDF5 files, plus the virtual datasets of
// an index file that show each global tensor whole (h5py: f["model/embedding/weight"][...]).
//
// Each rank writes only what it owns: a piece is an axis-aligned box of the global tensor
// (an offset and an extent per dimension), stored as a contiguous dataset at the tensor's path
// in the rank's file, with attributes global_shape, global_offset and crc32c (CRC-32C of the
// dataset's stored bytes, little-endian). The index file holds one virtual dataset per global
// tensor whose mapping lists the pieces (file name relative to the index, box); that mapping is
// also the table the reader uses, so h5py and sambay cannot disagree about where a piece lives.
//
// Reading is reshard-ready: any box of a global tensor (in particular a slice [offset, offset +
// size) along one dimension, what a rank of another parallel layout owns) is assembled from
// whichever pieces overlap it. Every piece touched is read whole, streamed in row blocks, and
// its checksum, type, shape and placement are verified before its values are used.
#pragma once

#include "io/hdf5_util.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sambay {

enum class StoredDType { f32, bf16 };
const char* stored_dtype_name(StoredDType t);

struct Box {
  std::vector<int64_t> offset, shape;
  int64_t numel() const;
  bool operator==(const Box&) const = default;
};

struct ShardPiece {
  std::string file;  // relative to the directory of the index file, e.g. "rank_00001.h5"
  Box box;           // where the piece sits in the global tensor
};

struct GlobalTensor {
  std::string path;  // dataset path, e.g. "model/layers.7/mixer/in_proj/weight"
  StoredDType dtype = StoredDType::f32;
  std::vector<int64_t> shape;
  std::vector<ShardPiece> pieces;
};

// The box that spans `size` entries from `offset` along dimension `dim` and everything along
// the other dimensions (the share of a rank that splits a tensor along `dim`).
Box slice_box(const std::vector<int64_t>& global_shape, int dim, int64_t offset, int64_t size);

// One rank's file. Pieces must not overlap within a tensor; the caller records them in the
// GlobalTensor list the index is written from.
class ShardFileWriter {
 public:
  explicit ShardFileWriter(std::string path);
  hid_t file() const { return file_; }  // for the caller's own attributes
  const std::string& path() const { return path_; }

  // data: box.shape values, row-major. NaN or infinite values are refused (the error names the
  // tensor and the first such element), so that no stored tensor holds them.
  void write_f32(const std::string& tensor, const std::vector<int64_t>& global_shape,
                 const Box& box, const float* data);
  // data: bfloat16 bit patterns (core/bf16.h).
  void write_bf16(const std::string& tensor, const std::vector<int64_t>& global_shape,
                  const Box& box, const uint16_t* data);

  // Closes the file and fsyncs it; errors name the file.
  void finish();

 private:
  void write(const std::string& tensor, const std::vector<int64_t>& global_shape, const Box& box,
             const void* data, StoredDType dtype);
  std::string path_;
  h5::Id file_;
  h5::Id bf16_;  // committed "types/bfloat16", created on first use
};

// Adds one virtual dataset per tensor to an open index file.
void write_virtual_tensors(hid_t index_file, const std::vector<GlobalTensor>& tensors,
                           const std::string& where);

// The tensor table of an index file: every virtual dataset, its type, shape and pieces.
// Throws naming the file when a mapping is not a set of disjoint boxes inside the tensor.
std::vector<GlobalTensor> read_virtual_tensors(hid_t index_file, const std::string& where);

// Reads boxes of global tensors from the rank files in `dir`, keeping each file open.
class ShardReader {
 public:
  explicit ShardReader(std::string dir) : dir_(std::move(dir)) {}

  // out: want.shape floats, row-major. bf16 pieces are widened exactly. A piece holding NaN or
  // infinite values is an error naming it.
  void read_box(const GlobalTensor& t, const Box& want, float* out);
  void read_slice(const GlobalTensor& t, int dim, int64_t offset, int64_t size, float* out) {
    read_box(t, slice_box(t.shape, dim, offset, size), out);
  }
  // Verifies a piece's checksum and placement without keeping its values; NaN or infinite
  // values are counted, not refused (to report them).
  struct PieceCheck {
    uint32_t crc32c = 0;
    int64_t non_finite = 0;  // NaN and infinite values among its elements
  };
  PieceCheck verify_piece(const GlobalTensor& t, const ShardPiece& piece);

 private:
  hid_t file(const std::string& name);
  // Streams a piece in row blocks, checks it (non-finite values are counted, and refused when
  // the values are for `out`), and copies its overlap with `want` into out (out may be null:
  // verification only).
  PieceCheck read_piece(const GlobalTensor& t, const ShardPiece& piece, const Box& want,
                        float* out);
  std::string dir_;
  std::map<std::string, h5::Id> files_;
};

}  // namespace sambay
