#include "io/tensorboard.h"

#include "core/check.h"
#include "io/crc32c.h"

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
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) fail("{}: cannot create: {}", path_, std::strerror(errno));
  std::string e = event_header(t, 0);
  bytes_field(e, 3, "brain.Event:2");
  write_event(e);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::scalars(int64_t step, double wall_time,
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
  write_event(e);
}

void TensorBoardWriter::write_event(const std::string& event) {
  std::string record;
  const uint64_t n = event.size();
  fixed(record, n);
  fixed(record, masked_crc(&n, sizeof n));
  record += event;
  fixed(record, masked_crc(event.data(), event.size()));
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() || std::fflush(file_) != 0)
    fail("{}: cannot write: {}", path_, std::strerror(errno));
}

}  // namespace sambay
