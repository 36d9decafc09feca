// Thin helpers over the HDF5 C API for the checkpoint code: owned identifiers, errors that name
// the file and carry HDF5's own reason, attributes and text datasets.
//
// A full disk: HDF5 1.10 cannot close a file whose final flush fails. H5Fclose returns an
// error, the file stays half torn down in the library, and closing it again (or the library's
// own cleanup at exit, which does) crashes. close_file reports the error once and never
// retries; the library's exit-time cleanup is switched off before its first use (sambay closes
// every file it opens itself), so such a file stays open until the process ends instead of
// crashing it.
//
// Files are created with the newest format this library writes (superblock v3, object header v2
// with checksums): a flipped bit in HDF5's own metadata is then reported by HDF5 instead of being
// parsed. Strings are fixed-length (kept in the checksummed object headers, never in HDF5's
// unchecked global heap).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sambay::h5 {

// An HDF5 identifier closed by its own close function when it goes out of scope.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Id& operator=(Id&& o) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();
  hid_t release() { return std::exchange(id_, -1); }  // the caller closes it

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// Throws sambay::Error "<where>: <what>: <HDF5's reason>" when value < 0; returns value.
hid_t check(hid_t value, const std::string& where, const std::string& what);

// Creates (truncating) or opens an HDF5 file. HDF5's automatic error printing is switched off
// on first use: failures surface as sambay::Error instead.
Id create_file(const std::string& path);
Id open_file(const std::string& path);
// Closes the file and everything in it, reporting errors (the destructor cannot).
void close_file(Id& file, const std::string& path);

// Creates the group at `path` ("a/b/c") and every missing parent.
Id create_group(hid_t loc, const std::string& path, const std::string& where);
bool exists(hid_t loc, const std::string& path);

// bfloat16 as a float type: sign bit 15, exponent bits 7..14 (bias 127), mantissa bits 0..6.
// HDF5 converts it to and from float32 exactly like a float type of its own.
Id bf16_type();

// Scalar and 1-D attributes. Readers throw naming `where`, the attribute, and what they found.
void write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& where);
void write_attr(hid_t obj, const std::string& name, double value, const std::string& where);
void write_attr(hid_t obj, const std::string& name, const std::string& value,
                const std::string& where);
void write_attr(hid_t obj, const std::string& name, const std::vector<int64_t>& value,
                const std::string& where);
void write_attr_u32(hid_t obj, const std::string& name, uint32_t value, const std::string& where);
void write_attr_u64(hid_t obj, const std::string& name, uint64_t value, const std::string& where);

int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where);
double read_attr_double(hid_t obj, const std::string& name, const std::string& where);
std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where);
std::vector<int64_t> read_attr_ints(hid_t obj, const std::string& name, const std::string& where);
uint32_t read_attr_u32(hid_t obj, const std::string& name, const std::string& where);
uint64_t read_attr_u64(hid_t obj, const std::string& name, const std::string& where);

// A scalar fixed-length string dataset (texts too long for an attribute), with a crc32c
// attribute over its bytes; the reader verifies it.
void write_text(hid_t loc, const std::string& path, const std::string& text,
                const std::string& where);
std::string read_text(hid_t loc, const std::string& path, const std::string& where);

// Dimensions of a dataset's dataspace.
std::vector<int64_t> dataset_shape(hid_t dataset, const std::string& where);

// Paths (without a leading '/') of every dataset in the file, in HDF5's name order.
std::vector<std::string> list_datasets(hid_t file, const std::string& where);

}  // namespace sambay::h5
