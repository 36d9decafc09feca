#include "io/mapped_file.h"

#include "core/check.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace sambay {

MappedFile::MappedFile(const std::string& file_path) : path(file_path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", path);
  }
  size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("{}: cannot map {} bytes: {}", path, size, std::strerror(err));
    }
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps the file alive
}

MappedFile::~MappedFile() {
  if (data) ::munmap(const_cast<uint8_t*>(data), size);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path(std::move(other.path)),
      data(std::exchange(other.data, nullptr)),
      size(std::exchange(other.size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data) ::munmap(const_cast<uint8_t*>(data), size);
    path = std::move(other.path);
    data = std::exchange(other.data, nullptr);
    size = std::exchange(other.size, 0);
  }
  return *this;
}

AtomicFileWriter::AtomicFileWriter(const std::string& file_path) : path(file_path) {
  // mkstemp gives a unique name, so concurrent writers of the same path do not collide.
  std::string pattern = path + ".tmp.XXXXXX";
  fd = ::mkstemp(pattern.data());
  if (fd < 0) fail("{}: cannot create a temporary file beside it: {}", path, std::strerror(errno));
  temp_path = pattern;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd >= 0) {
    ::close(fd);
    ::unlink(temp_path.c_str());
  }
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path(std::move(other.path)),
      temp_path(std::move(other.temp_path)),
      fd(std::exchange(other.fd, -1)) {}

void AtomicFileWriter::write(const void* bytes, size_t n) {
  SAMBAY_CHECK(fd >= 0, "{}: write after commit", path);
  const char* p = static_cast<const char*>(bytes);
  while (n > 0) {
    ssize_t done = ::write(fd, p, n);
    if (done < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", temp_path, std::strerror(errno));
    }
    p += done;
    n -= static_cast<size_t>(done);
  }
}

void AtomicFileWriter::commit() {
  SAMBAY_CHECK(fd >= 0, "{}: committed twice", path);
  // mkstemp creates the file 0600; give it the usual permissions of a data file.
  ::fchmod(fd, 0644);
  if (::fsync(fd) != 0) fail("{}: fsync failed: {}", temp_path, std::strerror(errno));
  if (::close(std::exchange(fd, -1)) != 0)
    fail("{}: close failed: {}", temp_path, std::strerror(errno));
  if (::rename(temp_path.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_path.c_str());
    fail("{}: cannot rename {} over it: {}", path, temp_path, std::strerror(err));
  }
}

}  // namespace sambay
