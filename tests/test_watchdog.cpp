// The watchdog (parallel/watchdog.h): its limits per phase, and that a phase outlasting its
// limit ends the process with kExitHung and a message naming the phase, the step and where the
// process waited. Under MPI the same path calls MPI_Abort: tests/fault/fault_injection.sh
// (stopped_rank) stops a rank of a real job with SIGSTOP.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "parallel/watchdog.h"

namespace sambay {
namespace {

TEST(Watchdog, StartupValidationAndCheckpointsGetLongerLimitsThanSteps) {
  Watchdog w(WatchdogLimits{0, 60, 1800}, 0, 1);
  // Automatic: before any step is done, even a step counts as startup.
  EXPECT_EQ(w.limit(WatchPhase::startup), 1800);
  EXPECT_EQ(w.limit(WatchPhase::step), 1800);
  w.done(WatchPhase::step, 2.0);
  EXPECT_EQ(w.limit(WatchPhase::step), 60);  // 10 x 2 s is below the floor
  w.done(WatchPhase::step, 30.0);
  EXPECT_EQ(w.limit(WatchPhase::step), 300);  // ten times the slowest step
  w.done(WatchPhase::checkpoint, 1000.0);
  EXPECT_EQ(w.limit(WatchPhase::checkpoint), 3000);  // three times the slowest save
  EXPECT_EQ(w.limit(WatchPhase::validation), 1800);

  Watchdog fixed(WatchdogLimits{5, 60, 1800}, 0, 1);
  fixed.done(WatchPhase::step, 100.0);
  EXPECT_EQ(fixed.limit(WatchPhase::step), 5);  // --watchdog_s wins
  EXPECT_EQ(fixed.limit(WatchPhase::checkpoint), 1800);
}

TEST(Watchdog, AProcessThatKeepsItsStepsWithinTheLimitRunsOn) {
  Watchdog w(WatchdogLimits{0.3, 0.3, 0.6}, 0, 1);
  for (int step = 1; step <= 8; ++step) {
    w.enter(WatchPhase::step, step);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    w.done(WatchPhase::step, 0.1);
  }
}

TEST(WatchdogDeathTest, AHungStepEndsTheProcessWithExitCode76NamingItsPhase) {
  EXPECT_EXIT(
      {
        Watchdog w(WatchdogLimits{0.5, 0.5, 0.5}, 0, 1);
        w.enter(WatchPhase::step, 1);
        w.done(WatchPhase::step, 0.01);
        w.enter(WatchPhase::step, 2);
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitHung),
      "the process: watchdog: the training step of step 2 has made no progress for 0.[5-9] s "
      "\\(limit 0.5 s, --watchdog_s\\): not in a collective \\(none has run yet\\)");
  EXPECT_EXIT(
      {
        Watchdog w(WatchdogLimits{0.2, 0.2, 0.5}, 0, 1);
        w.enter(WatchPhase::checkpoint, 7);
        std::this_thread::sleep_for(std::chrono::seconds(30));
      },
      ::testing::ExitedWithCode(kExitHung), "the checkpoint of step 7 has made no progress");
}

}  // namespace
}  // namespace sambay
