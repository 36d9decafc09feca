// A read-only memory mapping of a whole file. Token data is read through the page cache, so
// opening a terabyte dataset costs nothing until its pages are touched, and every process on a
// node shares one copy.
#pragma once

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

}  // namespace sambay
