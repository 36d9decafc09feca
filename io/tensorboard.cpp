#include "io/tensorboard.h"

#include "core/check.h"
#include "io/crc32c.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace sambay {

namespace {

// Protobuf wire format: a field's key is (number << 3) | wire type; 0 varint, 1 fixed64,
// 2 length-delimited, 5 fixed32.
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

template <typename T>
void fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian, as protobuf wants
  out.append(bytes, sizeof(T));
}

void bytes_field(std::string& out, int number, const std::string& bytes) {
  varint(out, static_cast<uint64_t>(number) << 3 | 2);
  varint(out, bytes.size());
  out += bytes;
}

std::string event_header(double wall_time, int64_t step) {
  std::string e;
  varint(e, 1 << 3 | 1);
  fixed(e, wall_time);
  varint(e, 2 << 3 | 0);
  varint(e, static_cast<uint64_t>(step));
  return e;
}

uint32_t masked_crc(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the TensorBoard directory: {}", dir, ec.message());
  char host[256] = "host";
  gethostname(host, sizeof host - 1);
  const double t = now_seconds();
  path_ = (std::filesystem::path(dir) /
           fmt::format("events.out.tfevents.{}.{}.{}.sambay", static_cast<int64_t>(t), host, getpid()))
              .string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot create: {}", path_, std::strerror(errno));
  std::string e = event_header(t, 0);
  bytes_field(e, 3, "brain.Event:2");
  if (const int err = write_event(e)) fail("{}: cannot write: {}", path_, std::strerror(err));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (fd_ >= 0) ::close(fd_);
}

int TensorBoardWriter::scalars(int64_t step, double wall_time,
                                const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    bytes_field(v, 1, tag);
    varint(v, 2 << 3 | 5);
    fixed(v, static_cast<float>(value));
    bytes_field(summary, 1, v);
  }
  std::string e = event_header(wall_time, step);
  bytes_field(e, 5, summary);
  return write_event(e);
}

int TensorBoardWriter::write_event(const std::string& event) {
  std::string record;
  const uint64_t n = event.size();
  fixed(record, n);
  fixed(record, masked_crc(&n, sizeof n));
  record += event;
  fixed(record, masked_crc(event.data(), event.size()));
  // Straight to the file (no stdio buffer): each event is on disk, or its failure known, when
  // this returns.
  for (size_t done = 0; done < record.size();) {
    const ssize_t w = ::write(fd_, record.data() + done, record.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno;
    if (w == 0) return EIO;
    done += static_cast<size_t>(w);
  }
  return 0;
}

}  // namespace sambay
