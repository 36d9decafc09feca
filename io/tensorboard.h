// TensorBoard event files, written without TensorFlow: a file is a sequence of records, each
//   u64 length | u32 masked CRC-32C of the length bytes | payload | u32 masked CRC-32C of payload
// (masked: ((crc >> 15) | (crc << 17)) + 0xa282ead8), and each payload an Event protobuf:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
// The first event names the version ("brain.Event:2"). TensorBoard reads every
// events.out.tfevents.* file of a directory, so a resumed run adds a file beside the old ones.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sambay {

class TensorBoardWriter {
 public:
  // Creates dir (and parents) and a new event file in it. Throws naming the file.
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  // One event holding the scalars (tag, value) at `step`, flushed to the file. Returns 0, or
  // the errno of a write that failed (the file may then end in a cut record, where readers
  // stop).
  [[nodiscard]] int scalars(int64_t step, double wall_time,
               const std::vector<std::pair<std::string, double>>& values);

  const std::string& path() const { return path_; }

 private:
  int write_event(const std::string& event);
  std::string path_;
  int fd_ = -1;
};

}  // namespace sambay
