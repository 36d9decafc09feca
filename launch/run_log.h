// What a training run reports, on rank 0: lines on stdout (the job's log) and JSON records in
// out_dir/metrics.jsonl. Every write is checked. A full disk or a closed log is a failure the
// run answers as --on_log_error says: `stop` (the default) ends the run after the step in
// flight, with a checkpoint, and exit code 2; `continue` prints one warning per log on stderr
// and trains on, writing what can still be written.
#pragma once

#include <fmt/format.h>

#include <string>

namespace sambay {

enum class LogErrorPolicy { stop, carry_on };
// "stop" or "continue"; fails naming --on_log_error otherwise.
LogErrorPolicy parse_log_error_policy(const std::string& text);

class RunLog {
 public:
  // Only the lead rank writes; on the others every call does nothing.
  RunLog(bool lead, LogErrorPolicy policy) : lead_(lead), policy_(policy) {}
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // Opens metrics.jsonl for appending. A run killed mid-record left a partial last line: the
  // next record starts on a fresh line. Fails naming the file when it cannot be opened.
  void open_metrics(const std::string& path);

  // A line of text on stdout ('\n' appended).
  void print_line(const std::string& line);
  template <typename... Args>
  void print(fmt::format_string<Args...> format, Args&&... args) {
    if (lead_) print_line(fmt::format(format, std::forward<Args>(args)...));
  }
  // One record (a JSON object, no newline) in metrics.jsonl.
  void record(const std::string& json);
  // A write to another file of the run's log (the TensorBoard events) failed with `err`:
  // answered as a failed record is.
  void file_failed(const std::string& path, int err);
  // Flushes stdout (metrics records are written whole when they are recorded).
  void flush();

  // The first write failure, under the stop policy ("" when there is none): what the
  // trainer stops for.
  const std::string& failure() const { return failure_; }

 private:
  void failed(const std::string& what, int err, bool& warned);

  const bool lead_;
  const LogErrorPolicy policy_;
  std::string metrics_path_;
  int metrics_fd_ = -1;
  bool metrics_partial_ = false;  // a cut record awaits its newline
  bool warned_metrics_ = false, warned_stdout_ = false, warned_file_ = false;
  std::string failure_;
};

}  // namespace sambay
