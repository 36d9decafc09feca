#include "optim/schedule.h"
#include "core/check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

namespace sambay {
namespace {

// Warmup: step / warmup_steps, so 0 at step 0, 0.5 halfway, 1 at step warmup_steps.
TEST(Schedule, LinearWarmupReachesOneAtWarmupSteps) {
  for (LrSchedule kind : {LrSchedule::constant, LrSchedule::cosine, LrSchedule::linear}) {
    const ScheduleConfig c{kind, 10, 110, 0.1, 0.0};
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 0.0);
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 5), 0.5);
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 9), 0.9);
    EXPECT_DOUBLE_EQ(lr_multiplier(c, 10), 1.0);
  }
}

TEST(Schedule, ConstantStaysAtOne) {
  const ScheduleConfig c{LrSchedule::constant, 4, 0, 0.0, 0.0};  // total_steps is unused
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 2), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 4), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 1000000), 1.0);
}

// warmup 10, total 110, min 0.1: the decay spans 100 steps, p = (step - 10) / 100.
TEST(Schedule, CosineHandValues) {
  const ScheduleConfig c{LrSchedule::cosine, 10, 110, 0.1, 0.0};
  // p = 0.25: 0.1 + 0.9 * (1 + cos(pi/4)) / 2 = 0.1 + 0.45 * 1.7071067812 = 0.8681980515
  EXPECT_NEAR(lr_multiplier(c, 35), 0.8681980515, 1e-10);
  // p = 0.5: cos = 0, so 0.1 + 0.45 = 0.55
  EXPECT_NEAR(lr_multiplier(c, 60), 0.55, 1e-15);
  // p = 0.75: 0.1 + 0.45 * (1 - 0.7071067812) = 0.2318019485
  EXPECT_NEAR(lr_multiplier(c, 85), 0.2318019485, 1e-10);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 5000), 0.1);
}

TEST(Schedule, LinearHandValues) {
  const ScheduleConfig c{LrSchedule::linear, 10, 110, 0.1, 0.0};
  EXPECT_NEAR(lr_multiplier(c, 35), 0.775, 1e-15);  // 0.1 + 0.9 * 0.75
  EXPECT_NEAR(lr_multiplier(c, 60), 0.55, 1e-15);   // 0.1 + 0.9 * 0.5
  EXPECT_NEAR(lr_multiplier(c, 109), 0.109, 1e-15);  // 0.1 + 0.9 * 0.01
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 110), 0.1);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 111), 0.1);
}

// warmup 10, total 100, decay_fraction 0.2: stable 1 on [10, 80], linear decay over [80, 100].
TEST(Schedule, WarmupStableDecayHandValues) {
  const ScheduleConfig c{LrSchedule::wsd, 10, 100, 0.0, 0.2};
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 5), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 50), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 80), 1.0);
  EXPECT_NEAR(lr_multiplier(c, 90), 0.5, 1e-15);
  EXPECT_NEAR(lr_multiplier(c, 95), 0.25, 1e-15);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 100), 0.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 150), 0.0);

  const ScheduleConfig floor{LrSchedule::wsd, 0, 100, 0.1, 0.2};
  EXPECT_DOUBLE_EQ(lr_multiplier(floor, 0), 1.0);           // no warmup
  EXPECT_NEAR(lr_multiplier(floor, 90), 0.55, 1e-15);       // 0.1 + 0.9 * 0.5
  EXPECT_DOUBLE_EQ(lr_multiplier(floor, 100), 0.1);
}

TEST(Schedule, NoWarmupStartsAtOne) {
  const ScheduleConfig c{LrSchedule::cosine, 0, 100, 0.0, 0.0};
  EXPECT_DOUBLE_EQ(lr_multiplier(c, 0), 1.0);
  EXPECT_NEAR(lr_multiplier(c, 50), 0.5, 1e-15);
}

TEST(Schedule, BadConfigurationsThrow) {
  EXPECT_THROW(lr_multiplier({LrSchedule::cosine, 10, 100, 0.0, 0.0}, -1), Error);
  EXPECT_THROW(lr_multiplier({LrSchedule::cosine, 200, 100, 0.0, 0.0}, 0), Error);
  EXPECT_THROW(lr_multiplier({LrSchedule::linear, 10, 100, 1.5, 0.0}, 20), Error);
  EXPECT_THROW(lr_multiplier({LrSchedule::wsd, 10, 100, 0.0, 0.0}, 20), Error);
  // Decay over the last 95 steps would start at step 5, inside the 10 warmup steps.
  EXPECT_THROW(lr_multiplier({LrSchedule::wsd, 10, 100, 0.0, 0.95}, 20), Error);
}

TEST(Schedule, ParseNames) {
  EXPECT_EQ(parse_lr_schedule("constant"), LrSchedule::constant);
  EXPECT_EQ(parse_lr_schedule("cosine"), LrSchedule::cosine);
  EXPECT_EQ(parse_lr_schedule("linear"), LrSchedule::linear);
  EXPECT_EQ(parse_lr_schedule("wsd"), LrSchedule::wsd);
  try {
    parse_lr_schedule("Cosine");
    ADD_FAILURE() << "'Cosine' was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const char* name : {"'Cosine'", "constant", "cosine", "linear", "wsd"})
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sambay
