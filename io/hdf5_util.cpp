#include "io/hdf5_util.h"

#include "core/check.h"
#include "io/crc32c.h"

#include <fmt/format.h>

#include <mutex>

namespace sambay::h5 {

namespace {

// Before any other HDF5 call (static initialisation): no exit-time cleanup (see the header).
const bool kExitCleanupOff = [] {
  H5dont_atexit();
  return true;
}();

void quiet_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

herr_t collect_error(unsigned, const H5E_error2_t* e, void* out) {
  auto* messages = static_cast<std::vector<std::string>*>(out);
  if (e->desc && *e->desc) messages->push_back(e->desc);
  return 0;
}

// HDF5's reasons, outermost first, e.g. "unable to open file; truncated file: eof = 1000".
std::string hdf5_reason() {
  std::vector<std::string> messages;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_error, &messages);
  H5Eclear2(H5E_DEFAULT);
  if (messages.empty()) return "HDF5 gave no reason";
  if (messages.size() == 1) return messages[0];
  return messages.front() + "; " + messages.back();
}

Id file_access(const std::string& path) {
  Id fapl(check(H5Pcreate(H5P_FILE_ACCESS), path, "file access properties"), H5Pclose);
  check(H5Pset_libver_bounds(fapl, H5F_LIBVER_LATEST, H5F_LIBVER_LATEST), path,
        "format version bounds");
  // Closing the file closes every object still open in it, so an error path leaks nothing.
  check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), path, "close degree");
  return fapl;
}

Id string_type(size_t size, const std::string& where) {
  Id t(check(H5Tcopy(H5T_C_S1), where, "string type"), H5Tclose);
  check(H5Tset_size(t, size == 0 ? 1 : size), where, "string size");
  check(H5Tset_cset(t, H5T_CSET_UTF8), where, "string character set");
  check(H5Tset_strpad(t, H5T_STR_NULLPAD), where, "string padding");
  return t;
}

Id scalar_space(const std::string& where) {
  return Id(check(H5Screate(H5S_SCALAR), where, "scalar dataspace"), H5Sclose);
}

void write_attr_raw(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type,
                    hid_t space, const void* data, const std::string& where) {
  if (H5Aexists(obj, name.c_str()) > 0) check(H5Adelete(obj, name.c_str()), where, "replace " + name);
  Id a(check(H5Acreate2(obj, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT), where,
             "create attribute " + name),
       H5Aclose);
  check(H5Awrite(a, mem_type, data), where, "write attribute " + name);
}

Id open_attr(hid_t obj, const std::string& name, const std::string& where) {
  const htri_t has = H5Aexists(obj, name.c_str());
  if (has <= 0) fail("{}: attribute '{}' is missing", where, name);
  return Id(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), where, "open attribute " + name),
            H5Aclose);
}

// Elements of an attribute's dataspace (1 for a scalar), checking it has at most one dimension.
int64_t attr_elements(hid_t attr, const std::string& name, const std::string& where) {
  Id space(check(H5Aget_space(attr), where, "attribute space " + name), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  if (rank < 0 || rank > 1) fail("{}: attribute '{}' has {} dimensions, expected 0 or 1", where, name, rank);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0) fail("{}: attribute '{}': bad dataspace", where, name);
  return n;
}

// Reads a numeric attribute of the expected class into `out` (converted by HDF5).
template <typename T>
std::vector<T> read_numeric(hid_t obj, const std::string& name, H5T_class_t cls, hid_t mem_type,
                            const std::string& where) {
  Id a = open_attr(obj, name, where);
  Id t(check(H5Aget_type(a), where, "attribute type " + name), H5Tclose);
  if (H5Tget_class(t) != cls)
    fail("{}: attribute '{}' has the wrong type class", where, name);
  std::vector<T> out(attr_elements(a, name, where));
  if (!out.empty()) check(H5Aread(a, mem_type, out.data()), where, "read attribute " + name);
  return out;
}

template <typename T>
T read_scalar(hid_t obj, const std::string& name, H5T_class_t cls, hid_t mem_type,
              const std::string& where) {
  std::vector<T> v = read_numeric<T>(obj, name, cls, mem_type, where);
  if (v.size() != 1) fail("{}: attribute '{}' has {} values, expected one", where, name, v.size());
  return v[0];
}

}  // namespace

Id& Id::operator=(Id&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

void Id::reset() {
  if (id_ >= 0 && close_) {
    // An object already closed by a strong file close is not an error worth reporting here.
    close_(id_);
    H5Eclear2(H5E_DEFAULT);
  }
  id_ = -1;
}

hid_t check(hid_t value, const std::string& where, const std::string& what) {
  if (value < 0) fail("{}: {}: {}", where, what, hdf5_reason());
  return value;
}

Id create_file(const std::string& path) {
  quiet_hdf5();
  Id fapl = file_access(path);
  return Id(check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), path,
                  "cannot create the HDF5 file"),
            H5Fclose);
}

Id open_file(const std::string& path) {
  quiet_hdf5();
  Id fapl = file_access(path);
  return Id(check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), path, "not a readable HDF5 file"),
            H5Fclose);
}

void close_file(Id& file, const std::string& path) {
  if (file.get() < 0) return;
  const hid_t id = file.release();  // a failed close must not be retried by the destructor
  check(H5Fclose(id), path, "close (flush) failed");
}

Id create_group(hid_t loc, const std::string& path, const std::string& where) {
  Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), where, "link properties"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl, 1), where, "intermediate groups");
  return Id(check(H5Gcreate2(loc, path.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT), where,
                  "create group " + path),
            H5Gclose);
}

bool exists(hid_t loc, const std::string& path) {
  // Checks each component, because H5Lexists fails (rather than returning false) when a parent
  // group is missing.
  size_t pos = 0;
  while (true) {
    const size_t slash = path.find('/', pos);
    const std::string prefix = path.substr(0, slash);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (slash == std::string::npos) return true;
    pos = slash + 1;
  }
}

Id bf16_type() {
  const std::string where = "bfloat16 type";
  Id t(check(H5Tcopy(H5T_IEEE_F32LE), where, "copy"), H5Tclose);
  // Order matters: fields must fit the precision, and the precision the size, at each call.
  check(H5Tset_fields(t, 15, 7, 8, 0, 7), where, "fields");
  check(H5Tset_precision(t, 16), where, "precision");
  check(H5Tset_offset(t, 0), where, "offset");
  check(H5Tset_size(t, 2), where, "size");
  check(H5Tset_ebias(t, 127), where, "exponent bias");
  return t;
}

void write_attr(hid_t obj, const std::string& name, int64_t value, const std::string& where) {
  Id s = scalar_space(where);
  write_attr_raw(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s, &value, where);
}

void write_attr(hid_t obj, const std::string& name, double value, const std::string& where) {
  Id s = scalar_space(where);
  write_attr_raw(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s, &value, where);
}

void write_attr(hid_t obj, const std::string& name, const std::string& value,
                const std::string& where) {
  Id s = scalar_space(where);
  Id t = string_type(value.size(), where);
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attr_raw(obj, name, t, t, s, padded.data(), where);
}

void write_attr(hid_t obj, const std::string& name, const std::vector<int64_t>& value,
                const std::string& where) {
  const hsize_t n = value.size();
  Id s(check(H5Screate_simple(1, &n, nullptr), where, "attribute space"), H5Sclose);
  write_attr_raw(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s, value.data(), where);
}

void write_attr_u32(hid_t obj, const std::string& name, uint32_t value, const std::string& where) {
  Id s = scalar_space(where);
  write_attr_raw(obj, name, H5T_STD_U32LE, H5T_NATIVE_UINT32, s, &value, where);
}

void write_attr_u64(hid_t obj, const std::string& name, uint64_t value, const std::string& where) {
  Id s = scalar_space(where);
  write_attr_raw(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, s, &value, where);
}

int64_t read_attr_int(hid_t obj, const std::string& name, const std::string& where) {
  return read_scalar<int64_t>(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, where);
}

double read_attr_double(hid_t obj, const std::string& name, const std::string& where) {
  return read_scalar<double>(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, where);
}

uint32_t read_attr_u32(hid_t obj, const std::string& name, const std::string& where) {
  return read_scalar<uint32_t>(obj, name, H5T_INTEGER, H5T_NATIVE_UINT32, where);
}

uint64_t read_attr_u64(hid_t obj, const std::string& name, const std::string& where) {
  return read_scalar<uint64_t>(obj, name, H5T_INTEGER, H5T_NATIVE_UINT64, where);
}

std::vector<int64_t> read_attr_ints(hid_t obj, const std::string& name, const std::string& where) {
  return read_numeric<int64_t>(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, where);
}

std::string read_attr_string(hid_t obj, const std::string& name, const std::string& where) {
  Id a = open_attr(obj, name, where);
  Id t(check(H5Aget_type(a), where, "attribute type " + name), H5Tclose);
  if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0)
    fail("{}: attribute '{}' is not a fixed-length string", where, name);
  if (attr_elements(a, name, where) != 1) fail("{}: attribute '{}' is not a scalar", where, name);
  const size_t size = H5Tget_size(t);
  std::string value(size, '\0');
  check(H5Aread(a, t, value.data()), where, "read attribute " + name);
  value.resize(std::min(value.size(), value.find('\0')));
  return value;
}

void write_text(hid_t loc, const std::string& path, const std::string& text,
                const std::string& where) {
  Id s = scalar_space(where);
  Id t = string_type(text.size(), where);
  Id lcpl(check(H5Pcreate(H5P_LINK_CREATE), where, "link properties"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl, 1), where, "intermediate groups");
  Id d(check(H5Dcreate2(loc, path.c_str(), t, s, lcpl, H5P_DEFAULT, H5P_DEFAULT), where,
             "create dataset " + path),
       H5Dclose);
  const std::string padded = text.empty() ? std::string(1, '\0') : text;
  check(H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, padded.data()), where, "write " + path);
  write_attr_u32(d, "crc32c", crc32c(text.data(), text.size()), where + ":" + path);
}

std::string read_text(hid_t loc, const std::string& path, const std::string& where) {
  if (!exists(loc, path)) fail("{}: dataset '{}' is missing", where, path);
  Id d(check(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), where, "open " + path), H5Dclose);
  Id t(check(H5Dget_type(d), where, "type of " + path), H5Tclose);
  if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0)
    fail("{}: dataset '{}' is not a fixed-length string", where, path);
  std::string text(H5Tget_size(t), '\0');
  check(H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data()), where, "read " + path);
  text.resize(std::min(text.size(), text.find('\0')));
  const uint32_t stored = read_attr_u32(d, "crc32c", where + ":" + path);
  const uint32_t actual = crc32c(text.data(), text.size());
  if (stored != actual)
    fail("{}: dataset '{}' is corrupt: crc32c {:08x} stored, {:08x} computed", where, path,
         stored, actual);
  return text;
}

std::vector<int64_t> dataset_shape(hid_t dataset, const std::string& where) {
  Id space(check(H5Dget_space(dataset), where, "dataspace"), H5Sclose);
  const int rank = check(H5Sget_simple_extent_ndims(space), where, "dataspace rank");
  std::vector<hsize_t> dims(rank);
  check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), where, "dataspace dims");
  return std::vector<int64_t>(dims.begin(), dims.end());
}

namespace {

struct VisitState {
  std::vector<std::string> datasets;
};

herr_t visit_object(hid_t, const char* name, const H5O_info_t* info, void* data) {
  if (info->type == H5O_TYPE_DATASET) static_cast<VisitState*>(data)->datasets.push_back(name);
  return 0;
}

}  // namespace

std::vector<std::string> list_datasets(hid_t file, const std::string& where) {
  VisitState state;
  // H5Ovisit2: the 1.10 signature (1.12 renamed the info struct).
  check(H5Ovisit2(file, H5_INDEX_NAME, H5_ITER_INC, visit_object, &state, H5O_INFO_BASIC), where,
        "list datasets");
  return state.datasets;
}

}  // namespace sambay::h5
