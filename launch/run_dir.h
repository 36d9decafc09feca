// The run directory (--out_dir) before training starts. A trainer
//   1. takes the directory's lock (RunDirLock): one trainer per run directory, so that two of
//      them never interleave metrics or commit checkpoints over each other;
//   2. checks that it can write the directory and its checkpoints/ (check_writable_directory),
//      so that an unwritable path is reported at start, not at the first save;
//   3. decides whether the run is accepted (config, data, checkpoint to resume from) and writes
//      nothing else into the directory before it is: a refused start leaves it as it was;
//   4. once accepted, removes what interrupted runs left (remove_run_leftovers).
#pragma once

#include <string>
#include <vector>

namespace sambay {

// An exclusive lock on a run directory: out_dir/trainer.lock, held with flock(2), so that the
// kernel releases it when the process ends however it ends (kill -9 included). The file says
// who holds it ("pid 1234 on node17 since 2026-01-01T12:00:00Z"), which a refused second
// trainer reports. On a file system that cannot lock files (Lustre mounted without flock) a
// warning says that a second trainer would not be refused, and training goes on.
class RunDirLock {
 public:
  // Creates out_dir (and missing parents) when it does not exist, then the lock file, and
  // locks it. Fails naming the holder when another process holds it, and naming the path and
  // the system's reason when the directory cannot be created or written.
  explicit RunDirLock(const std::string& out_dir);
  // The run was accepted: directories created for it stay.
  void accept() { accepted_ = true; }
  // Removes the lock file and unlocks; a run that was not accepted also removes the
  // directories the constructor created (those still empty), leaving no trace.
  ~RunDirLock();
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  int fd_ = -1;
  bool locked_ = false;
  bool accepted_ = false;
  std::vector<std::string> created_;  // directories made by the constructor, outermost first
};

// Fails with "<what> <dir>: cannot write there (<reason>)" unless this process may create
// files in `dir` (access(2): permissions and read-only file systems). A missing directory is
// checked through its nearest existing parent, where it would be created.
void check_writable_directory(const std::string& dir, const std::string& what);

// Temporary files of interrupted atomic writes (NAME.tmp.XXXXXX) in out_dir, and the
// leftovers of interrupted checkpoints in out_dir/checkpoints (remove_checkpoint_leftovers):
// removes them and returns their paths. Only under the run's lock.
std::vector<std::string> remove_run_leftovers(const std::string& out_dir);

}  // namespace sambay
