// A read-only memory mapping of a whole file. Token data is read through the page cache, so
// opening a terabyte dataset costs nothing until its pages are touched, and every process on a
// node shares one copy.
#pragma once

#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sambay {

struct MappedFile {
  std::string path;
  const uint8_t* data = nullptr;  // null for an empty file
  size_t size = 0;                // bytes

  MappedFile() = default;
  // Throws sambay::Error naming the path and the system's reason when it cannot be mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
};

// Runs `read`, a read of mapped files, so that a file truncated while it is mapped (a data file
// shortened or rewritten in place while training reads it) is an error naming the file, not
// a crash: reading a page past the new end raises SIGBUS, which inside a guarded read is
// turned into a sambay::Error ("<path>: changed while it was being read: ... bytes now, ...
// when it was opened"). Outside guarded reads SIGBUS keeps its previous handler.
// `read` must not own objects with destructors (they would be skipped when the read is cut
// short): reads of mapped bytes into caller-owned buffers, as the token readers do.
template <typename Fn>
decltype(auto) guard_mapped_reads(Fn&& read);

// Writes a file so that readers see either the old file or the complete new one, never a part:
// bytes go to a temporary file beside `path`, which commit() flushes to disk and renames over
// `path`. Destroying an uncommitted writer deletes the temporary file.
struct AtomicFileWriter {
  std::string path;
  std::string temp_path;
  int fd = -1;

  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&&) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* bytes, size_t n);
  void commit();
};

// Whether a file name is one of AtomicFileWriter's temporary files ("NAME.tmp.XXXXXX"): a
// process killed before commit() leaves it behind.
bool is_atomic_write_temporary(const std::string& file_name);

namespace detail {

// One guarded read on this thread's stack (guards nest); the SIGBUS handler jumps back to it.
struct MappedReadGuard {
  sigjmp_buf resume;
  volatile std::uintptr_t fault_address = 0;
  MappedReadGuard* outer;
  MappedReadGuard();
  ~MappedReadGuard();
  MappedReadGuard(const MappedReadGuard&) = delete;
  MappedReadGuard& operator=(const MappedReadGuard&) = delete;
};

// The error for a SIGBUS at `address`: which mapped file it lies in, and its size then and now.
[[noreturn]] void fail_mapped_read(std::uintptr_t address);

}  // namespace detail

template <typename Fn>
decltype(auto) guard_mapped_reads(Fn&& read) {
  detail::MappedReadGuard guard;
  // The mask is not saved: the handler runs with SA_NODEFER, so SIGBUS is not left blocked.
  if (sigsetjmp(guard.resume, 0) != 0) detail::fail_mapped_read(guard.fault_address);
  return read();
}

}  // namespace sambay
