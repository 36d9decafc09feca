#include "io/tensor_shards.h"

#include "core/bf16.h"
#include "core/check.h"
#include "io/crc32c.h"
#include "io/durable_fs.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

namespace sambay {

namespace {

// Pieces are written and read in blocks of whole rows of about this size: small enough that
// the checksum reads each block from cache right after HDF5 has copied it, large enough that
// the per-call overhead does not matter.
constexpr int64_t kBlockBytes = 4 << 20;

size_t element_bytes(StoredDType t) { return t == StoredDType::f32 ? 4 : 2; }

int64_t volume(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// Calls fn(file_space, memory_space, first_row, rows) for consecutive blocks of rows (along
// dimension 0) of a dataset of `shape`, with the file space selecting those rows.
template <typename Fn>
void for_each_row_block(hid_t dataset, const std::vector<int64_t>& shape, size_t esize,
                        const std::string& where, Fn fn) {
  const int64_t rows = shape[0], row_elems = rows > 0 ? volume(shape) / rows : 0;
  if (rows == 0 || row_elems == 0) return;
  const int64_t block_rows = std::max<int64_t>(1, kBlockBytes / (row_elems * esize));
  h5::Id fspace(h5::check(H5Dget_space(dataset), where, "dataspace"), H5Sclose);
  std::vector<hsize_t> start(shape.size(), 0), count(shape.begin(), shape.end());
  for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const int64_t n = std::min(block_rows, rows - r0);
    start[0] = r0;
    count[0] = n;
    h5::check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(),
                                  nullptr),
              where, "select rows");
    const hsize_t mem_n = n * row_elems;
    h5::Id mspace(h5::check(H5Screate_simple(1, &mem_n, nullptr), where, "memory space"),
                  H5Sclose);
    fn(fspace.get(), mspace.get(), r0, n);
  }
}

void check_box_inside(const Box& b, const std::vector<int64_t>& shape, const std::string& what) {
  bool ok = b.offset.size() == shape.size() && b.shape.size() == shape.size();
  for (size_t d = 0; ok && d < shape.size(); ++d)
    ok = b.offset[d] >= 0 && b.shape[d] >= 0 && b.offset[d] + b.shape[d] <= shape[d];
  if (!ok)
    fail("{}: box at {} of shape {} is not inside the tensor of shape {}", what, b.offset,
         b.shape, shape);
}

// Elements in the intersection of two boxes.
int64_t overlap(const Box& a, const Box& b) {
  int64_t n = 1;
  for (size_t d = 0; d < a.shape.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.shape[d], b.offset[d] + b.shape[d]);
    if (hi <= lo) return 0;
    n *= hi - lo;
  }
  return n;
}

// Copies the intersection of src (values of box sb) into dst (values of box db).
void copy_overlap(const float* src, const Box& sb, float* dst, const Box& db) {
  const size_t nd = sb.shape.size();
  std::vector<int64_t> lo(nd), hi(nd), src_stride(nd), dst_stride(nd);
  for (size_t d = 0; d < nd; ++d) {
    lo[d] = std::max(sb.offset[d], db.offset[d]);
    hi[d] = std::min(sb.offset[d] + sb.shape[d], db.offset[d] + db.shape[d]);
    if (hi[d] <= lo[d]) return;
  }
  src_stride[nd - 1] = dst_stride[nd - 1] = 1;
  for (size_t d = nd - 1; d > 0; --d) {
    src_stride[d - 1] = src_stride[d] * sb.shape[d];
    dst_stride[d - 1] = dst_stride[d] * db.shape[d];
  }
  const int64_t run = hi[nd - 1] - lo[nd - 1];
  std::vector<int64_t> idx(lo.begin(), lo.end());  // odometer over all but the last dimension
  while (true) {
    int64_t s = 0, t = 0;
    for (size_t d = 0; d < nd; ++d) {
      s += (idx[d] - sb.offset[d]) * src_stride[d];
      t += (idx[d] - db.offset[d]) * dst_stride[d];
    }
    std::memcpy(dst + t, src + s, run * sizeof(float));
    int d = static_cast<int>(nd) - 2;
    for (; d >= 0; --d) {
      if (++idx[d] < hi[d]) break;
      idx[d] = lo[d];
    }
    if (d < 0) return;
  }
}

// Whether stored element i is NaN or infinite: its exponent bits all set.
bool non_finite_at(const uint8_t* bytes, int64_t i, StoredDType t) {
  if (t == StoredDType::f32) {
    uint32_t bits;
    std::memcpy(&bits, bytes + 4 * i, 4);
    return (bits & 0x7f800000u) == 0x7f800000u;
  }
  uint16_t bits;
  std::memcpy(&bits, bytes + 2 * i, 2);
  return (bits & 0x7f80u) == 0x7f80u;
}

int64_t count_non_finite(const uint8_t* bytes, int64_t n, StoredDType t) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += non_finite_at(bytes, i, t);
  return count;
}

int64_t first_non_finite(const uint8_t* bytes, int64_t n, StoredDType t) {
  int64_t i = 0;
  while (i < n && !non_finite_at(bytes, i, t)) ++i;
  return i;
}

hid_t file_type_of(StoredDType t, hid_t bf16_committed) {
  return t == StoredDType::f32 ? H5T_IEEE_F32LE : bf16_committed;
}

}  // namespace

const char* stored_dtype_name(StoredDType t) { return t == StoredDType::f32 ? "f32" : "bf16"; }

int64_t Box::numel() const { return volume(shape); }

Box slice_box(const std::vector<int64_t>& global_shape, int dim, int64_t offset, int64_t size) {
  SAMBAY_CHECK(dim >= 0 && dim < static_cast<int>(global_shape.size()),
               "dimension {} of a {}-dimensional tensor", dim, global_shape.size());
  SAMBAY_CHECK(offset >= 0 && size >= 0 && offset + size <= global_shape[dim],
               "slice [{}, {}) outside dimension {} of size {}", offset, offset + size, dim,
               global_shape[dim]);
  Box b{std::vector<int64_t>(global_shape.size(), 0), global_shape};
  b.offset[dim] = offset;
  b.shape[dim] = size;
  return b;
}

ShardFileWriter::ShardFileWriter(std::string path)
    : path_(std::move(path)), file_(h5::create_file(path_)) {}

void ShardFileWriter::write_f32(const std::string& tensor, const std::vector<int64_t>& global_shape,
                                const Box& box, const float* data) {
  write(tensor, global_shape, box, data, StoredDType::f32);
}

void ShardFileWriter::write_bf16(const std::string& tensor,
                                 const std::vector<int64_t>& global_shape, const Box& box,
                                 const uint16_t* data) {
  if (bf16_.get() < 0) {
    bf16_ = h5::bf16_type();
    h5::Id lcpl(h5::check(H5Pcreate(H5P_LINK_CREATE), path_, "link properties"), H5Pclose);
    h5::check(H5Pset_create_intermediate_group(lcpl, 1), path_, "intermediate groups");
    h5::check(H5Tcommit2(file_, "types/bfloat16", bf16_, lcpl, H5P_DEFAULT, H5P_DEFAULT), path_,
              "commit the bfloat16 type");
  }
  write(tensor, global_shape, box, data, StoredDType::bf16);
}

void ShardFileWriter::write(const std::string& tensor, const std::vector<int64_t>& global_shape,
                            const Box& box, const void* data, StoredDType dtype) {
  const std::string where = path_ + ":" + tensor;
  SAMBAY_CHECK(!global_shape.empty(), "{}: tensors need at least one dimension", where);
  check_box_inside(box, global_shape, where);
  std::vector<hsize_t> dims(box.shape.begin(), box.shape.end());
  h5::Id space(h5::check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                         where, "dataspace"),
               H5Sclose);
  h5::Id lcpl(h5::check(H5Pcreate(H5P_LINK_CREATE), where, "link properties"), H5Pclose);
  h5::check(H5Pset_create_intermediate_group(lcpl, 1), where, "intermediate groups");
  h5::Id dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), where, "dataset properties"), H5Pclose);
  h5::check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), where, "fill time");
  const hid_t type = file_type_of(dtype, bf16_);
  h5::Id d(h5::check(H5Dcreate2(file_, tensor.c_str(), type, space, lcpl, dcpl, H5P_DEFAULT),
                     where, "create dataset"),
           H5Dclose);
  const size_t esize = element_bytes(dtype);
  const size_t row_bytes = box.shape[0] > 0 ? box.numel() / box.shape[0] * esize : 0;
  uint32_t crc = 0;
  for_each_row_block(d, box.shape, esize, where, [&](hid_t fspace, hid_t mspace, int64_t r0, int64_t n) {
    const uint8_t* block = static_cast<const uint8_t*>(data) + r0 * row_bytes;
    crc = crc32c(block, n * row_bytes, crc);
    // Checked while the block is in cache for its checksum: NaN or infinite values are refused.
    const int64_t elements = static_cast<int64_t>(n * row_bytes / esize);
    if (const int64_t bad = count_non_finite(block, elements, dtype))
      fail("{}: refusing to store {} NaN or infinite values (the first at element {}): a "
           "checkpoint of non-finite values cannot be trained from",
           where, bad, r0 * static_cast<int64_t>(row_bytes / esize) +
                           first_non_finite(block, elements, dtype));
    h5::check(H5Dwrite(d, type, mspace, fspace, H5P_DEFAULT, block), where, "write");
  });
  h5::write_attr(d, "global_shape", global_shape, where);
  h5::write_attr(d, "global_offset", box.offset, where);
  h5::write_attr_u32(d, "crc32c", crc, where);
}

void ShardFileWriter::finish() {
  bf16_.reset();
  h5::close_file(file_, path_);
  fsync_path(path_);
}

void write_virtual_tensors(hid_t index_file, const std::vector<GlobalTensor>& tensors,
                           const std::string& where) {
  h5::Id bf16;
  for (const GlobalTensor& t : tensors) {
    const std::string at = where + ":" + t.path;
    if (t.dtype == StoredDType::bf16 && bf16.get() < 0) {
      bf16 = h5::bf16_type();
      h5::Id lcpl(h5::check(H5Pcreate(H5P_LINK_CREATE), where, "link properties"), H5Pclose);
      h5::check(H5Pset_create_intermediate_group(lcpl, 1), where, "intermediate groups");
      h5::check(H5Tcommit2(index_file, "types/bfloat16", bf16, lcpl, H5P_DEFAULT, H5P_DEFAULT),
                where, "commit the bfloat16 type");
    }
    std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
    h5::Id vspace(h5::check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                            at, "dataspace"),
                  H5Sclose);
    h5::Id dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), at, "dataset properties"), H5Pclose);
    for (const ShardPiece& p : t.pieces) {
      check_box_inside(p.box, t.shape, at);
      std::vector<hsize_t> start(p.box.offset.begin(), p.box.offset.end());
      std::vector<hsize_t> block(p.box.shape.begin(), p.box.shape.end());
      std::vector<hsize_t> one(dims.size(), 1);
      h5::Id sel(h5::check(H5Scopy(vspace), at, "copy dataspace"), H5Sclose);
      h5::check(H5Sselect_hyperslab(sel, H5S_SELECT_SET, start.data(), nullptr, one.data(),
                                    block.data()),
                at, "select the piece");
      h5::Id src(h5::check(H5Screate_simple(static_cast<int>(block.size()), block.data(), nullptr),
                           at, "source dataspace"),
                 H5Sclose);
      h5::check(H5Pset_virtual(dcpl, sel, p.file.c_str(), ("/" + t.path).c_str(), src), at,
                "map piece in " + p.file);
    }
    h5::Id lcpl(h5::check(H5Pcreate(H5P_LINK_CREATE), at, "link properties"), H5Pclose);
    h5::check(H5Pset_create_intermediate_group(lcpl, 1), at, "intermediate groups");
    h5::Id d(h5::check(H5Dcreate2(index_file, t.path.c_str(), file_type_of(t.dtype, bf16), vspace,
                                  lcpl, dcpl, H5P_DEFAULT),
                       at, "create virtual dataset"),
             H5Dclose);
  }
}

std::vector<GlobalTensor> read_virtual_tensors(hid_t index_file, const std::string& where) {
  std::vector<GlobalTensor> out;
  h5::Id bf16 = h5::bf16_type();
  for (const std::string& path : h5::list_datasets(index_file, where)) {
    const std::string at = where + ":" + path;
    h5::Id d(h5::check(H5Dopen2(index_file, path.c_str(), H5P_DEFAULT), at, "open"), H5Dclose);
    h5::Id dcpl(h5::check(H5Dget_create_plist(d), at, "creation properties"), H5Pclose);
    if (H5Pget_layout(dcpl) != H5D_VIRTUAL) continue;  // texts and other plain datasets
    GlobalTensor t;
    t.path = path;
    t.shape = h5::dataset_shape(d, at);
    h5::Id type(h5::check(H5Dget_type(d), at, "type"), H5Tclose);
    if (H5Tequal(type, H5T_IEEE_F32LE) > 0)
      t.dtype = StoredDType::f32;
    else if (H5Tequal(type, bf16) > 0)
      t.dtype = StoredDType::bf16;
    else
      fail("{}: element type is neither float32 nor bfloat16", at);
    size_t count = 0;
    h5::check(H5Pget_virtual_count(dcpl, &count), at, "piece count");
    const int nd = static_cast<int>(t.shape.size());
    for (size_t i = 0; i < count; ++i) {
      ShardPiece p;
      const ssize_t flen = H5Pget_virtual_filename(dcpl, i, nullptr, 0);
      const ssize_t dlen = H5Pget_virtual_dsetname(dcpl, i, nullptr, 0);
      if (flen <= 0 || dlen <= 0) fail("{}: piece {}: unreadable mapping", at, i);
      std::string file(flen + 1, '\0'), dset(dlen + 1, '\0');
      H5Pget_virtual_filename(dcpl, i, file.data(), file.size());
      H5Pget_virtual_dsetname(dcpl, i, dset.data(), dset.size());
      file.resize(flen);
      dset.resize(dlen);
      if (dset != "/" + path)
        fail("{}: piece {} maps dataset '{}' of {}, expected '/{}'", at, i, dset, file, path);
      if (file.find('/') != std::string::npos || file == "." || file == "..")
        fail("{}: piece {} lives in '{}', expected a file beside the index", at, i, file);
      p.file = file;
      h5::Id vs(h5::check(H5Pget_virtual_vspace(dcpl, i), at, "piece selection"), H5Sclose);
      std::vector<hsize_t> start(nd), stride(nd), cnt(nd), block(nd);
      if (H5Sis_regular_hyperslab(vs) <= 0 ||
          H5Sget_regular_hyperslab(vs, start.data(), stride.data(), cnt.data(), block.data()) < 0)
        fail("{}: piece {} is not a box", at, i);
      for (int k = 0; k < nd; ++k) {
        if (cnt[k] != 1 && stride[k] != block[k]) fail("{}: piece {} is not a box", at, i);
        p.box.offset.push_back(static_cast<int64_t>(start[k]));
        p.box.shape.push_back(static_cast<int64_t>(cnt[k] * block[k]));
      }
      check_box_inside(p.box, t.shape, at);
      t.pieces.push_back(std::move(p));
    }
    // Disjoint pieces whose volumes add up to the tensor's cover it exactly once.
    int64_t covered = 0;
    for (size_t a = 0; a < t.pieces.size(); ++a) {
      covered += t.pieces[a].box.numel();
      for (size_t b = a + 1; b < t.pieces.size(); ++b)
        if (overlap(t.pieces[a].box, t.pieces[b].box) > 0)
          fail("{}: pieces in {} and {} overlap", at, t.pieces[a].file, t.pieces[b].file);
    }
    if (covered != volume(t.shape))
      fail("{}: pieces cover {} of {} elements", at, covered, volume(t.shape));
    out.push_back(std::move(t));
  }
  return out;
}

hid_t ShardReader::file(const std::string& name) {
  auto it = files_.find(name);
  if (it == files_.end())
    it = files_.emplace(name, h5::open_file((std::filesystem::path(dir_) / name).string())).first;
  return it->second;
}

ShardReader::PieceCheck ShardReader::read_piece(const GlobalTensor& t, const ShardPiece& piece,
                                                const Box& want, float* out) {
  const std::string where = (std::filesystem::path(dir_) / piece.file).string() + ":" + t.path;
  const hid_t f = file(piece.file);
  if (!h5::exists(f, t.path)) fail("{}: dataset is missing", where);
  h5::Id d(h5::check(H5Dopen2(f, t.path.c_str(), H5P_DEFAULT), where, "open"), H5Dclose);
  h5::Id type(h5::check(H5Dget_type(d), where, "type"), H5Tclose);
  h5::Id bf16 = h5::bf16_type();
  const hid_t expected_type = t.dtype == StoredDType::f32 ? H5T_IEEE_F32LE : bf16.get();
  if (H5Tequal(type, expected_type) <= 0)
    fail("{}: element type is not the index's {}", where, stored_dtype_name(t.dtype));
  const std::vector<int64_t> shape = h5::dataset_shape(d, where);
  if (shape != piece.box.shape)
    fail("{}: shape {} but the index says {}", where, shape, piece.box.shape);
  const std::vector<int64_t> gshape = h5::read_attr_ints(d, "global_shape", where);
  if (gshape != t.shape)
    fail("{}: global_shape {} but the index says {}", where, gshape, t.shape);
  const std::vector<int64_t> goff = h5::read_attr_ints(d, "global_offset", where);
  if (goff != piece.box.offset)
    fail("{}: global_offset {} but the index says {}", where, goff, piece.box.offset);
  const uint32_t stored = h5::read_attr_u32(d, "crc32c", where);

  // A piece that is exactly the box asked for (f32) is read straight into the caller's buffer;
  // otherwise each block goes through a scratch buffer and its overlap with the box is copied.
  const size_t esize = element_bytes(t.dtype);
  const int64_t row_elems = shape[0] > 0 ? volume(shape) / shape[0] : 0;
  const bool direct = out && t.dtype == StoredDType::f32 && piece.box == want;
  const int64_t scratch_rows = std::min<int64_t>(
      shape[0], std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, row_elems * esize)));
  std::vector<uint8_t> raw(direct ? 0 : scratch_rows * row_elems * esize);
  std::vector<float> values(out && !direct && t.dtype == StoredDType::bf16 ? raw.size() / 2 : 0);
  uint32_t crc = 0;
  int64_t non_finite = 0;
  for_each_row_block(d, shape, esize, where, [&](hid_t fspace, hid_t mspace, int64_t r0, int64_t n) {
    uint8_t* block = direct ? reinterpret_cast<uint8_t*>(out + r0 * row_elems) : raw.data();
    h5::check(H5Dread(d, expected_type, mspace, fspace, H5P_DEFAULT, block), where, "read");
    crc = crc32c(block, n * row_elems * esize, crc);
    non_finite += count_non_finite(block, n * row_elems, t.dtype);
    if (!out || direct) return;
    Box rows = piece.box;
    rows.offset[0] += r0;
    rows.shape[0] = n;
    if (overlap(rows, want) == 0) return;
    const float* src = reinterpret_cast<const float*>(raw.data());
    if (t.dtype == StoredDType::bf16) {
      const uint16_t* bits = reinterpret_cast<const uint16_t*>(raw.data());
      for (int64_t i = 0; i < n * row_elems; ++i) values[i] = to_float(bf16::from_bits(bits[i]));
      src = values.data();
    }
    copy_overlap(src, rows, out, want);
  });
  if (crc != stored)
    fail("{}: data is corrupt: crc32c {:08x} stored, {:08x} computed", where, stored, crc);
  if (out && non_finite > 0)
    fail("{}: {} values are NaN or infinite: training from them is impossible (the run had "
         "diverged when this was written, or the values are damaged)",
         where, non_finite);
  return {crc, non_finite};
}

void ShardReader::read_box(const GlobalTensor& t, const Box& want, float* out) {
  check_box_inside(want, t.shape, t.path);
  int64_t covered = 0;
  for (const ShardPiece& p : t.pieces) {
    const int64_t n = overlap(p.box, want);
    if (n == 0) continue;
    read_piece(t, p, want, out);
    covered += n;
  }
  if (covered != want.numel())
    fail("{}: the pieces cover {} of the {} elements asked for", t.path, covered, want.numel());
}

ShardReader::PieceCheck ShardReader::verify_piece(const GlobalTensor& t, const ShardPiece& piece) {
  return read_piece(t, piece, piece.box, nullptr);
}

}  // namespace sambay
