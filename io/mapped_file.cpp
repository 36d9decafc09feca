#include "io/mapped_file.h"

#include "core/check.h"

#include <fmt/format.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <map>
#include <mutex>
#include <utility>

namespace sambay {

namespace {

// Live mappings, so that a fault address can be traced to its file: start -> (bytes, path).
std::mutex mappings_mutex;
std::map<const uint8_t*, std::pair<size_t, std::string>> mappings;

thread_local detail::MappedReadGuard* current_guard = nullptr;
struct sigaction previous_sigbus;

extern "C" void on_sigbus(int sig, siginfo_t* info, void* context) {
  detail::MappedReadGuard* guard = current_guard;
  if (!guard) {
    // Not a guarded read: whatever handled SIGBUS before (MPI's backtrace, or the default
    // action) handles the fault when the instruction runs again.
    sigaction(SIGBUS, &previous_sigbus, nullptr);
    (void)sig, (void)context;
    return;
  }
  guard->fault_address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  siglongjmp(guard->resume, 1);
}

void install_sigbus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &sa, &previous_sigbus);
  });
}

}  // namespace

namespace detail {

MappedReadGuard::MappedReadGuard() : outer(current_guard) {
  install_sigbus_handler();
  current_guard = this;
}

MappedReadGuard::~MappedReadGuard() { current_guard = outer; }

void fail_mapped_read(std::uintptr_t address) {
  std::string path;
  size_t mapped = 0;
  {
    std::lock_guard lock(mappings_mutex);
    auto it = mappings.upper_bound(reinterpret_cast<const uint8_t*>(address));
    if (it != mappings.begin()) {
      --it;
      if (address < reinterpret_cast<std::uintptr_t>(it->first) + it->second.first)
        path = it->second.second, mapped = it->second.first;
    }
  }
  if (path.empty())
    fail("a mapped file changed while it was being read (SIGBUS at {:#x})", address);
  struct stat st {};
  const std::string now = ::stat(path.c_str(), &st) == 0
                              ? fmt::format("{} bytes now", st.st_size)
                              : fmt::format("now unreadable ({})", std::strerror(errno));
  fail("{}: changed while it was being read: {}, {} when it was opened (truncated or rewritten "
       "in place while a run reads it? Replace data files by renaming new ones over them)",
       path, now, mapped);
}

}  // namespace detail

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
    std::lock_guard lock(mappings_mutex);
    mappings[data] = {size, path};
  }
  ::close(fd);  // the mapping keeps the file alive
}

namespace {
void unmap(const uint8_t* data, size_t size) {
  if (!data) return;
  {
    std::lock_guard lock(mappings_mutex);
    mappings.erase(data);
  }
  ::munmap(const_cast<uint8_t*>(data), size);
}
}  // namespace

MappedFile::~MappedFile() { unmap(data, size); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path(std::move(other.path)),
      data(std::exchange(other.data, nullptr)),
      size(std::exchange(other.size, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    unmap(data, size);
    path = std::move(other.path);
    data = std::exchange(other.data, nullptr);
    size = std::exchange(other.size, 0);
  }
  return *this;
}

namespace {
constexpr std::string_view kTempInfix = ".tmp.";
constexpr size_t kTempRandomChars = 6;  // mkstemp's XXXXXX
}  // namespace

bool is_atomic_write_temporary(const std::string& name) {
  const size_t n = kTempInfix.size() + kTempRandomChars;
  if (name.size() <= n || name.compare(name.size() - n, kTempInfix.size(), kTempInfix) != 0)
    return false;
  for (size_t i = name.size() - kTempRandomChars; i < name.size(); ++i)
    if (!std::isalnum(static_cast<unsigned char>(name[i]))) return false;
  return true;
}

AtomicFileWriter::AtomicFileWriter(const std::string& file_path) : path(file_path) {
  // mkstemp gives a unique name, so concurrent writers of the same path do not collide.
  std::string pattern = path + std::string(kTempInfix) + std::string(kTempRandomChars, 'X');
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
