// A preloaded library (LD_PRELOAD) that makes writes fail the way a full disk does, for the
// fault-injection tests: writes to files whose path contains $SAMBAY_FAULT_PATH succeed for
// the first $SAMBAY_FAULT_AFTER_BYTES bytes (over the whole process; a write that crosses the
// limit is cut short, as on a disk that fills up mid-write) and then fail with ENOSPC (or the
// errno named by $SAMBAY_FAULT_ERRNO: EIO, EDQUOT). It wraps the calls sambay's writers reach
// through the dynamic linker: write, pwrite, writev (HDF5's file driver, the C++ streams,
// sambay's own writers) and fsync. Without $SAMBAY_FAULT_PATH it changes nothing.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static atomic_llong written;

static int fault_errno(void) {
  const char* e = getenv("SAMBAY_FAULT_ERRNO");
  if (e && !strcmp(e, "EIO")) return EIO;
  if (e && !strcmp(e, "EDQUOT")) return EDQUOT;
  return ENOSPC;
}

// Bytes of a `count`-byte write to fd that may still go through (count when fd is not a
// faulty file), or -1 with errno set when none may.
static ssize_t allowed(int fd, size_t count) {
  const char* pattern = getenv("SAMBAY_FAULT_PATH");
  if (!pattern || !*pattern) return (ssize_t)count;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 0) return (ssize_t)count;
  path[n] = '\0';
  if (!strstr(path, pattern)) return (ssize_t)count;
  const char* after = getenv("SAMBAY_FAULT_AFTER_BYTES");
  const long long limit = after ? atoll(after) : 0;
  const long long before = atomic_fetch_add(&written, (long long)count);
  if (before >= limit) {
    errno = fault_errno();
    return -1;
  }
  return before + (long long)count <= limit ? (ssize_t)count : (ssize_t)(limit - before);
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

ssize_t write(int fd, const void* buf, size_t count) {
  const ssize_t ok = allowed(fd, count);
  if (ok < 0) return -1;
  return REAL("write", ssize_t(*)(int, const void*, size_t))(fd, buf, (size_t)ok);
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  const ssize_t ok = allowed(fd, count);
  if (ok < 0) return -1;
  return REAL("pwrite", ssize_t(*)(int, const void*, size_t, off_t))(fd, buf, (size_t)ok, offset);
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off_t offset) {
  return pwrite(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  const ssize_t ok = allowed(fd, total);
  if (ok < 0) return -1;
  if ((size_t)ok == total)
    return REAL("writev", ssize_t(*)(int, const struct iovec*, int))(fd, iov, iovcnt);
  // Cut short: write the first `ok` bytes of the vector.
  ssize_t done = 0;
  for (int i = 0; i < iovcnt && done < ok; ++i) {
    size_t n = iov[i].iov_len;
    if ((ssize_t)n > ok - done) n = (size_t)(ok - done);
    const ssize_t w = REAL("write", ssize_t(*)(int, const void*, size_t))(fd, iov[i].iov_base, n);
    if (w < 0) return done > 0 ? done : -1;
    done += w;
  }
  return done;
}

int fsync(int fd) {
  if (allowed(fd, 0) < 0) return -1;
  return REAL("fsync", int (*)(int))(fd);
}
