// The train config's refusals of bad input, at the level of validate_train_config: non-finite
// or absurd hyperparameters, and sizes whose products would wrap around 64 bits, each named by
// its option before anything is planned.
#include <cmath>
#include <limits>

#include "core/size_limits.h"
#include "launch/train_config.h"
#include "tests/io_test_util.h"

namespace sambay {
namespace {

using testing::expect_error;

TrainConfig valid_config() {
  TrainConfig c;
  c.model_preset = "tiny-sambay-da";
  c.model = model_preset(c.model_preset);
  c.data = {"data/corpus"};
  c.seq_len = 32;
  c.micro_batch = 2;
  c.steps = 10;
  c.warmup = 2;
  return c;
}

TEST(TrainConfig, TheDefaultsOfATinyRunAreValid) {
  EXPECT_NO_THROW(validate_train_config(valid_config()));
}

TEST(TrainConfig, NonFiniteOrAbsurdHyperparametersAreRefusedNamingTheOption) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  const struct {
    const char* option;
    double TrainConfig::*field;
    double value;
  } cases[] = {
      {"--lr", &TrainConfig::lr, inf},
      {"--lr", &TrainConfig::lr, nan},
      {"--lr", &TrainConfig::lr, 1e30},
      {"--lr", &TrainConfig::lr, -1e-3},
      {"--weight_decay", &TrainConfig::weight_decay, inf},
      {"--weight_decay", &TrainConfig::weight_decay, nan},
      {"--weight_decay", &TrainConfig::weight_decay, 1e4},  // lr 1e-3 x 1e4 >= 1
      {"--adam_eps", &TrainConfig::adam_eps, inf},
      {"--adam_eps", &TrainConfig::adam_eps, nan},
      {"--clip", &TrainConfig::clip, inf},
      {"--clip", &TrainConfig::clip, nan},
      {"--beta1", &TrainConfig::beta1, nan},
      {"--beta2", &TrainConfig::beta2, inf},
      {"--min_lr_ratio", &TrainConfig::min_lr_ratio, nan},
      {"--decay_fraction", &TrainConfig::decay_fraction, nan},
      {"--valid_fraction", &TrainConfig::valid_fraction, inf},
      {"--dp_bucket_mb", &TrainConfig::dp_bucket_mb, inf},
      {"--watchdog_s", &TrainConfig::watchdog_s, nan},
      {"--watchdog_s", &TrainConfig::watchdog_s, -1},
  };
  for (const auto& k : cases) {
    TrainConfig c = valid_config();
    c.*k.field = k.value;
    expect_error([&] { validate_train_config(c); }, {std::string("option ") + k.option});
  }
  TrainConfig c = valid_config();
  c.lr = 1;  // large, but a finite step
  c.weight_decay = 0.5;
  EXPECT_NO_THROW(validate_train_config(c));
  c.model.norm_eps = std::numeric_limits<double>::infinity();
  expect_error([&] { validate_train_config(c); }, {"model.norm_eps"});
  c = valid_config();
  c.on_log_error = "ignore";
  expect_error([&] { validate_train_config(c); }, {"option --on_log_error", "'ignore'"});
}

TEST(TrainConfig, SizesWhoseProductsWrapAroundAreRefusedNamingTheOption) {
  const struct {
    const char* named;
    void (*set)(TrainConfig&);
  } cases[] = {
      {"option --micro_batch", [](TrainConfig& c) { c.micro_batch = int64_t{1} << 62; }},
      {"option --micro_batch", [](TrainConfig& c) { c.micro_batch = 100000000000000; }},
      {"option --seq_len", [](TrainConfig& c) { c.seq_len = 3000000000; }},
      {"option --steps", [](TrainConfig& c) { c.steps = std::numeric_limits<int64_t>::max(); }},
      {"option --grad_accum", [](TrainConfig& c) { c.grad_accum = int64_t{1} << 61; }},
      {"option --eval_batches", [](TrainConfig& c) { c.eval_batches = int64_t{1} << 62; }},
      {"option --dp_bucket_mb", [](TrainConfig& c) { c.dp_bucket_mb = 1e300; }},
      {"model.vocab", [](TrainConfig& c) { c.model.vocab = int64_t{1} << 62; }},
      {"model.d_model", [](TrainConfig& c) { c.model.d_model = 3000000000; }},
      {"model.d_inner",
       [](TrainConfig& c) {
         c.model.d_inner = kMaxModelDimension;
         c.model.d_state = kMaxModelDimension;
       }},
  };
  for (const auto& k : cases) {
    TrainConfig c = valid_config();
    k.set(c);
    expect_error([&] { validate_train_config(c); }, {k.named});
  }
  // The check with the data-parallel ranks of a job: fine on one rank, too many tokens on 2^40.
  // Rules that divide or multiply options come after the checks they need: --cp 0 with sequence
  // parallelism was a division by zero.
  TrainConfig zero_cp = valid_config();
  zero_cp.model = model_preset("tiny-sambay");
  zero_cp.cp = 0, zero_cp.tp = 2, zero_cp.sequence_parallel = true;
  expect_error([&] { validate_train_config(zero_cp); }, {"option --cp: must be >= 1, got 0"});
  TrainConfig c = valid_config();
  c.steps = int64_t{1} << 40;
  c.warmup = 0;
  EXPECT_NO_THROW(check_train_sizes(c, 1));
  expect_error([&] { check_train_sizes(c, 1 << 30); },
               {"option --steps", "the tokens of the whole run"});
}

TEST(SizeLimits, NamesTheLargestOptionAndShowsTheProduct) {
  expect_error(
      [] {
        check_size_product(
            "a buffer", {{"--a", 3}, {"--b", 1e18, "what b stands for"}, {"(derived)", 1e30}}, 4);
      },
      {"option --b: 1e+18 (what b stands for) is too large", "a buffer",
       "--a 3 x --b 1e+18 (what b stands for) x (derived) 1e+30 x 4 bytes"});
  EXPECT_NO_THROW(check_size_product("fits", {{"--a", 1e9}, {"--b", 1e9}}, 4));
}

}  // namespace
}  // namespace sambay
