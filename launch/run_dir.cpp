#include "launch/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "core/utc_time.h"
#include "io/checkpoint_dir.h"
#include "io/mapped_file.h"

namespace sambay {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLockName = "trainer.lock";

std::string host_name() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

// What the lock file says about its holder, one line.
std::string lock_holder(int fd) {
  char buf[512] = {};
  const ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, n > 0 ? static_cast<size_t>(n) : 0);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s.empty() ? "a process that has not written its name yet" : s;
}

// The missing directories on the way to `dir`, outermost first.
std::vector<std::string> missing_directories(const fs::path& dir) {
  std::vector<std::string> missing;
  std::error_code ec;
  for (fs::path p = dir; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.insert(missing.begin(), p.string());
    if (p == p.parent_path()) break;
  }
  return missing;
}

}  // namespace

RunDirLock::RunDirLock(const std::string& out_dir) {
  const fs::path dir(out_dir);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    fail("option --out_dir {}: exists and is not a directory", out_dir);
  for (const std::string& d : missing_directories(dir)) {
    if (::mkdir(d.c_str(), 0777) != 0 && errno != EEXIST)
      fail("option --out_dir {}: cannot create {}: {}", out_dir, d, std::strerror(errno));
    created_.push_back(d);
  }
  path_ = (dir / kLockName).string();
  // The lock file may be removed by the holder as it lets go: lock the file the path names
  // after locking, or start again.
  for (;;) {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      const int err = errno;
      release();
      fail("option --out_dir {}: cannot write there (creating {}: {})", out_dir, path_,
           std::strerror(err));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      if (err == ENOLCK || err == ENOSYS || err == EOPNOTSUPP) {
        // A file system mounted without lock support (Lustre without -o flock, some NFS):
        // training goes on, but nothing stops a second trainer, and the user is told so.
        std::fputs(fmt::format("sambay: warning: {}: the file system cannot lock files ({}): a "
                               "second trainer on this run directory would not be refused\n",
                               path_, std::strerror(err))
                       .c_str(),
                   stderr);
        locked_ = true;
        break;
      }
      const std::string holder = lock_holder(fd_);
      release();
      if (err == EWOULDBLOCK)
        fail("option --out_dir {}: another trainer is using this run directory: {} holds {} "
             "(wait for it to end, or train into another --out_dir)",
             out_dir, holder, path_);
      fail("option --out_dir {}: cannot lock {}: {}", out_dir, path_, std::strerror(err));
    }
    locked_ = true;
    struct stat held = {}, named = {};
    if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &named) == 0 &&
        held.st_ino == named.st_ino && held.st_dev == named.st_dev)
      break;
    ::close(fd_);
    fd_ = -1;
    locked_ = false;
  }
  const std::string me = fmt::format("pid {} on {} since {}\n", ::getpid(), host_name(), utc_now());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, me.data(), me.size(), 0) != ssize_t(me.size())) {
    const int err = errno;
    release();
    fail("option --out_dir {}: cannot write {}: {}", out_dir, path_, std::strerror(err));
  }
}

RunDirLock::~RunDirLock() { release(); }

void RunDirLock::release() {
  if (fd_ >= 0) {
    // Unlinked while still locked: a process that opened the old file finds it gone after
    // locking it and starts again (the loop above).
    if (locked_) ::unlink(path_.c_str());
    ::close(fd_);
    fd_ = -1;
    locked_ = false;
  }
  if (!accepted_)
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) ::rmdir(it->c_str());
  created_.clear();
}

void check_writable_directory(const std::string& dir, const std::string& what) {
  fs::path p(dir);
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  if (p.empty()) p = ".";
  if (!fs::is_directory(p, ec)) fail("{} {}: {} is not a directory", what, dir, p.string());
  // Asked, not tried: a refused run must not touch the directory (access(2) also reports a
  // read-only file system).
  if (::access(p.c_str(), W_OK | X_OK) != 0)
    fail("{} {}: cannot write there ({}: {})", what, dir, p.string(), std::strerror(errno));
}

std::vector<std::string> remove_run_leftovers(const std::string& out_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return removed;
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    if (!entry.is_regular_file() || !is_atomic_write_temporary(entry.path().filename().string()))
      continue;
    fs::remove(entry.path());
    removed.push_back(entry.path().string());
  }
  for (std::string& path :
       remove_checkpoint_leftovers((fs::path(out_dir) / "checkpoints").string()))
    removed.push_back(std::move(path));
  return removed;
}

}  // namespace sambay
