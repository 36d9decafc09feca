#include "optim/mup.h"
#include "core/check.h"

#include <gtest/gtest.h>

#include <cmath>

namespace sambay {
namespace {

constexpr ParamClass kAll[] = {ParamClass::embedding, ParamClass::hidden_matrix,
                               ParamClass::vector};

// Twice the base width, same depth (base_depth 0: no depth transfer): hidden matrices get half
// the learning rate and an init std smaller by sqrt(2); the logits are halved; embedding and
// vectors keep lr 1 and lose weight decay; the residual scale is 1 / sqrt(2 * 8) = 0.25.
TEST(Mup, TwiceTheWidth) {
  const MupConfig c{true, 256, 512, 8};
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::hidden_matrix, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::embedding, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::vector, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::hidden_matrix, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::embedding, c), 0.0);
  EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(ParamClass::vector, c), 0.0);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 0.5);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 0.25);
  // fan_in 512 (a d -> d projection): 0.02 * sqrt(256 / 512); fan_in 1024 (Mamba out_proj,
  // E = 2d): 0.02 * sqrt(256 / 1024) = 0.01.
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 512, c, 0.02), 0.02 / std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 1024, c, 0.02), 0.01);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::embedding, 512, c, 0.02), 0.02);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::vector, 512, c, 0.02), 0.02);
}

// The base model itself: every multiplier is 1 except the vector weight decay and the residual.
TEST(Mup, BaseModelIsUnscaled) {
  const MupConfig c{true, 1024, 1024, 8, 8};
  for (ParamClass cls : kAll) EXPECT_DOUBLE_EQ(mup_lr_multiplier(cls, c), 1.0);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 1.0);
  EXPECT_DOUBLE_EQ(mup_init_std(ParamClass::hidden_matrix, 1024, c, 0.02), 0.02);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 1.0 / 4.0);
}

// ArchScale's scaling runs: width = 128 * depth, base depth 8. At depth 32 (4x wider and
// deeper): hidden lr (8/32) * sqrt(8/32) = 0.125, vector lr sqrt(8/32) = 0.5, logits 1/4,
// residual 1 / sqrt(64) = 0.125.
TEST(Mup, DepthTransfer) {
  const MupConfig c{true, 1024, 4096, 32, 8};
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::hidden_matrix, c), 0.125);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::embedding, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_lr_multiplier(ParamClass::vector, c), 0.5);
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 0.25);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 0.125);
}

TEST(Mup, DisabledIsStandardParameterisation) {
  const MupConfig c{false, 256, 2048, 24, 8};
  for (ParamClass cls : kAll) {
    EXPECT_DOUBLE_EQ(mup_lr_multiplier(cls, c), 1.0);
    EXPECT_DOUBLE_EQ(mup_weight_decay_multiplier(cls, c), 1.0);
    EXPECT_DOUBLE_EQ(mup_init_std(cls, 2048, c, 0.02), 0.02);
  }
  EXPECT_DOUBLE_EQ(mup_logit_scale(c), 1.0);
  EXPECT_DOUBLE_EQ(mup_residual_scale(c), 1.0);
}

TEST(Mup, BadConfigThrows) {
  EXPECT_THROW(mup_logit_scale({true, 0, 512, 8}), Error);
  EXPECT_THROW(mup_residual_scale({true, 256, 512, 0}), Error);
  EXPECT_THROW(mup_lr_multiplier(ParamClass::vector, {true, 256, 512, 8, -1}), Error);
  EXPECT_THROW(mup_init_std(ParamClass::hidden_matrix, 0, {true, 256, 512, 8}, 0.02), Error);
}

}  // namespace
}  // namespace sambay
