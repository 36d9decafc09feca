#include "parallel/watchdog.h"

#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "parallel/communicator.h"

namespace sambay {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The wall-clock time (local, HH:MM:SS) of a steady-clock instant in the past.
std::string wall_time_of(Clock::time_point t) {
  const auto ago =
      std::chrono::duration_cast<std::chrono::system_clock::duration>(Clock::now() - t);
  const std::time_t when =
      std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() - ago);
  std::tm tm{};
  localtime_r(&when, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

}  // namespace

const char* watch_phase_name(WatchPhase phase) {
  switch (phase) {
    case WatchPhase::startup:
      return "startup";
    case WatchPhase::step:
      return "training step";
    case WatchPhase::validation:
      return "validation";
    case WatchPhase::checkpoint:
      return "checkpoint";
  }
  return "?";
}

Watchdog::Watchdog(const WatchdogLimits& limits, int world_rank, int world_size)
    : limits_(limits), rank_(world_rank), size_(world_size), since_(Clock::now()) {
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::enter(WatchPhase phase, int64_t step) {
  std::lock_guard lock(mutex_);
  phase_ = phase;
  step_ = step;
  since_ = Clock::now();
}

void Watchdog::done(WatchPhase phase, double seconds) {
  std::lock_guard lock(mutex_);
  double& slowest = slowest_[static_cast<int>(phase)];
  slowest = std::max(slowest, seconds);
  if (phase == WatchPhase::step) any_step_done_ = true;
}

double Watchdog::limit(WatchPhase phase) const {
  std::lock_guard lock(mutex_);
  return limit_locked(phase);
}

double Watchdog::limit_locked(WatchPhase phase) const {
  const double step = limits_.step_s > 0
                          ? limits_.step_s
                          : std::max(limits_.min_step_s, 10 * slowest_[int(WatchPhase::step)]);
  // The first step (compilation, cold caches, the first data pages) counts as startup.
  if (phase == WatchPhase::step && any_step_done_) return step;
  const double kind = phase == WatchPhase::step ? 0 : 3 * slowest_[static_cast<int>(phase)];
  return std::max({step, limits_.long_phase_s, kind});
}

void Watchdog::run() {
  std::unique_lock lock(mutex_);
  Clock::time_point due = Clock::now();  // when this check was meant to run
  while (!stopping_) {
    const Clock::time_point now = Clock::now();
    const double limit = limit_locked(phase_);
    const double waited = seconds_between(since_, now);
    // A check far later than planned means the whole process was not running (SIGSTOP, or a
    // starved node): then this rank is the one that stopped, and says so.
    const double late = seconds_between(due, now);
    if (waited > limit) fire(phase_, step_, waited, limit, late > 1 ? late : 0);
    // Check ten times per limit, at most once a second.
    const double poll = std::min(1.0, limit / 10);
    due = now + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(poll));
    wake_.wait_until(lock, due);
  }
}

void Watchdog::fire(WatchPhase phase, int64_t step, double waited, double limit, double suspended) {
  const CollectiveActivity a = collective_activity();
  const Clock::time_point now = Clock::now();
  std::string where;
  if (a.active)
    where = fmt::format("waiting since {} ({:.1f} s) in {} over {} of group '{}' ({} ranks)",
                        wall_time_of(a.since), seconds_between(a.since, now), a.operation,
                        a.backend, a.group, a.ranks);
  else if (a.completed > 0)
    where = fmt::format(
        "not in a collective; the last one, {} of group '{}', returned at {} "
        "({:.1f} s ago)",
        a.operation, a.group, wall_time_of(a.since), seconds_between(a.since, now));
  else
    where = "not in a collective (none has run yet)";
  const std::string who =
      size_ > 1 ? fmt::format("rank {} of {}", rank_, size_) : std::string("the process");
  const std::string cause =
      suspended > 0 ? fmt::format(
                          "This process itself did not run for the last {:.1f} s (it was stopped, "
                          "or its node did not schedule it)",
                          suspended)
                    : std::string("A rank has stopped or hangs (or a file system or GPU is stuck)");
  const std::string message = fmt::format(
      "sambay: {}: watchdog: the {} of step {} has made no progress for {:.1f} s (limit "
      "{:.3g} s, --watchdog_s): {}. {}; ending the job with exit code {} so that it can be "
      "requeued from the last checkpoint\n",
      who, watch_phase_name(phase), step, waited, limit, where, cause, kExitHung);
  std::fputs(message.c_str(), stderr);
  std::fflush(stderr);
  std::fflush(stdout);
  abort_nccl_communicators();
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Finalized(&finalized);
  if (size_ > 1 && initialized && !finalized) {
    // MPI_Abort needs the MPI library to respond; if it is wedged too, SIGALRM ends this
    // process after 30 s and the launcher takes down the rest.
    alarm(30);
    MPI_Abort(MPI_COMM_WORLD, kExitHung);
  }
  std::_Exit(kExitHung);
}

}  // namespace sambay
