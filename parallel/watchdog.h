// The watchdog: a thread on every rank that ends a job whose ranks have stopped making
// progress. A rank that dies ends an MPI job at once; a rank that stops without dying (a stuck
// file system, a wedged GPU, a lost node whose sockets stay open) leaves the others blocked in
// a collective for ever, burning the whole allocation. The training loop tells the watchdog
// which phase it is in (startup, a step, validation, a checkpoint); when a phase outlasts its
// limit the watchdog prints, on stderr, which rank waited in which collective of which group
// since when, aborts the NCCL communicators and ends the whole job with MPI_Abort and exit code
// kExitHung, which slurm/train.sbatch answers with a requeue from the last checkpoint.
//
// Limits: a training step may take --watchdog_s seconds, or, when that is 0, ten times the
// slowest step so far and at least a minute. Startup (until the first step is done),
// validation and checkpoints take longer: at least 30 minutes, or three times the slowest one
// of their kind so far, or the step limit, whichever is longest.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace sambay {

// EX_PROTOCOL from sysexits.h: the job ended because a rank stopped responding; distinct from
// errors (2, 3) and the checkpointed requeue (75).
constexpr int kExitHung = 76;

enum class WatchPhase { startup, step, validation, checkpoint };
const char* watch_phase_name(WatchPhase phase);

struct WatchdogLimits {
  double step_s = 0;           // a step's limit; 0: automatic (10 x the slowest, >= min_step_s)
  double min_step_s = 60;      // the automatic step limit's floor
  double long_phase_s = 1800;  // startup, validation and checkpoints: at least this
};

class Watchdog {
 public:
  // Starts the thread; the startup phase begins now. world_rank/world_size name this rank in
  // the message and decide how the job ends (MPI_Abort with several ranks).
  Watchdog(const WatchdogLimits& limits, int world_rank, int world_size);
  ~Watchdog();  // stops the thread
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // A phase begins now; `step` is the training step it belongs to (for the message).
  void enter(WatchPhase phase, int64_t step);
  // The phase entered last ended after `seconds`: feeds the automatic limits.
  void done(WatchPhase phase, double seconds);

  // The limit of a phase now, in seconds.
  double limit(WatchPhase phase) const;

 private:
  double limit_locked(WatchPhase phase) const;
  void run();
  // suspended: seconds this process itself did not run just before the check (it was stopped,
  // or not scheduled), 0 when it ran.
  [[noreturn]] void fire(WatchPhase phase, int64_t step, double waited, double limit,
                         double suspended);

  const WatchdogLimits limits_;
  const int rank_, size_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  WatchPhase phase_ = WatchPhase::startup;
  int64_t step_ = 0;
  bool any_step_done_ = false;
  std::chrono::steady_clock::time_point since_;
  double slowest_[4] = {0, 0, 0, 0};  // per phase
  std::thread thread_;
};

}  // namespace sambay
