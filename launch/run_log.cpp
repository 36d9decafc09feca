#include "launch/run_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/check.h"

namespace sambay {

namespace {

// Writes all of `text` to fd; returns 0, or the errno of the write that failed.
int write_all(int fd, const char* text, size_t n, size_t& written) {
  written = 0;
  while (written < n) {
    const ssize_t w = ::write(fd, text + written, n - written);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    written += static_cast<size_t>(w);
  }
  return 0;
}

}  // namespace

LogErrorPolicy parse_log_error_policy(const std::string& text) {
  if (text == "stop") return LogErrorPolicy::stop;
  if (text == "continue") return LogErrorPolicy::carry_on;
  fail("option --on_log_error: '{}' is not stop or continue", text);
}

RunLog::~RunLog() {
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
}

void RunLog::open_metrics(const std::string& path) {
  if (!lead_) return;
  metrics_path_ = path;
  metrics_fd_ = ::open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (metrics_fd_ < 0) fail("{}: cannot open for writing: {}", path, std::strerror(errno));
  const off_t end = ::lseek(metrics_fd_, 0, SEEK_END);
  char last = '\n';
  metrics_partial_ = end > 0 && ::pread(metrics_fd_, &last, 1, end - 1) == 1 && last != '\n';
}

void RunLog::failed(const std::string& what, int err, bool& warned) {
  const std::string message = fmt::format("{}: write failed: {}", what, std::strerror(err));
  if (policy_ == LogErrorPolicy::stop) {
    if (failure_.empty()) failure_ = message;
    return;
  }
  if (warned) return;
  warned = true;
  std::fputs(fmt::format("sambay: warning: {}; training continues (--on_log_error continue), "
                         "later records may be missing\n",
                         message)
                 .c_str(),
             stderr);
  std::fflush(stderr);
}

void RunLog::print_line(const std::string& line) {
  if (!lead_) return;
  errno = 0;
  if (std::fputs(line.c_str(), stdout) == EOF || std::fputc('\n', stdout) == EOF)
    failed("stdout (the job's log)", errno ? errno : EIO, warned_stdout_);
}

void RunLog::record(const std::string& json) {
  if (!lead_ || metrics_fd_ < 0) return;
  const std::string line = (metrics_partial_ ? "\n" : "") + json + "\n";
  size_t written = 0;
  const int err = write_all(metrics_fd_, line.data(), line.size(), written);
  if (err == 0) {
    metrics_partial_ = false;
    return;
  }
  // A cut record is finished by the next one's leading newline.
  if (written > 0) metrics_partial_ = line[written - 1] != '\n';
  failed(metrics_path_, err, warned_metrics_);
}

void RunLog::file_failed(const std::string& path, int err) {
  if (lead_) failed(path, err, warned_file_);
}

void RunLog::flush() {
  if (!lead_) return;
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    const int err = errno ? errno : EIO;
    std::clearerr(stdout);
    failed("stdout (the job's log)", err, warned_stdout_);
  }
}

}  // namespace sambay
