// The recompute option and plan: parsing (the old booleans too), the plans' activation bytes on
// the GPU model (counted without a GPU), and auto's choice for given memory sizes.
#include "core/check.h"
#include "core/activations.h"
#include "core/model.h"
#include "core/recompute_plan.h"

#include <gtest/gtest.h>

#include <string>

namespace sambay {
namespace {

constexpr int64_t kGiB = int64_t(1) << 30;

TEST(RecomputePlan, ParsesModesAndTheOldBooleans) {
  for (const char* v : {"none", "false", "0", "no", "off"})
    EXPECT_EQ(parse_recompute_mode(v, "recompute"), RecomputeMode::none) << v;
  for (const char* v : {"all", "true", "1", "yes", "on"})
    EXPECT_EQ(parse_recompute_mode(v, "recompute"), RecomputeMode::all) << v;
  EXPECT_EQ(parse_recompute_mode("auto", "recompute"), RecomputeMode::auto_choice);
  for (RecomputeMode m : {RecomputeMode::none, RecomputeMode::auto_choice, RecomputeMode::all})
    EXPECT_EQ(parse_recompute_mode(recompute_mode_name(m), "recompute"), m);
  try {
    parse_recompute_mode("some", "recompute");
    ADD_FAILURE() << "'some' was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("option --recompute"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'some'"), std::string::npos) << msg;
  }
}

TEST(RecomputePlan, UniformPlansAndTheirDescription) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  EXPECT_EQ(loss_chunks(c), 25);  // 200064 / 8192, rounded up
  const RecomputePlan none = no_recompute(c), all = full_recompute(c);
  EXPECT_EQ(none.loss_kept_chunks, 25);
  EXPECT_EQ(all.loss_kept_chunks, 0);
  EXPECT_EQ(std::count(none.layers.begin(), none.layers.end(), true), 0);
  EXPECT_EQ(std::count(all.layers.begin(), all.layers.end(), true), 32);
  EXPECT_EQ(uniform_recompute(c, true), all);
  EXPECT_EQ(recompute_flops(c, 1, 4096, none), 0.0);
  // Full recompute: every layer's forward again and the whole logits GEMM.
  double layers = 0;
  for (int i = 0; i < 32; ++i) layers += layer_forward_flops_per_token(c, i, 4096);
  EXPECT_DOUBLE_EQ(recompute_flops(c, 1, 4096, all), 4096 * (layers + 2.0 * 200064 * 2560));
  EXPECT_DOUBLE_EQ(training_flops_per_token(c, 4096), 3 * (layers + 2.0 * 200064 * 2560));

  RecomputePlan some = none;
  for (int i : {0, 2, 4, 6}) some.layers[i] = true;
  some.loss_kept_chunks = 20;
  const std::string text = describe_recompute(c, some, true);
  EXPECT_NE(text.find("mamba 0, 2, 4, 6 (4 of"), std::string::npos) << text;
  EXPECT_NE(text.find("sliding_window none (0 of"), std::string::npos) << text;
  EXPECT_NE(text.find("loss logits kept: 20 of 25 chunks"), std::string::npos) << text;
  EXPECT_EQ(describe_recompute(c, some, false).find("loss"), std::string::npos);
}

// The GPU plan's bytes: a kept loss chunk costs its [n, 8192] bf16 logits, and the chunks not
// kept share one such slot (so the first chunk dropped frees nothing).
TEST(RecomputePlan, GpuActivationBytesFollowThePlan) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  const int64_t B = 1, L = 8192, n = B * L;
  const RecomputePlan none = no_recompute(c);
  const int64_t none_bytes = gpu_activation_bytes(c, B, L, none);
  RecomputePlan fewer_chunks = none;
  fewer_chunks.loss_kept_chunks = 24;
  EXPECT_EQ(gpu_activation_bytes(c, B, L, fewer_chunks), none_bytes);
  fewer_chunks.loss_kept_chunks = 23;
  EXPECT_EQ(none_bytes - gpu_activation_bytes(c, B, L, fewer_chunks), 2 * n * 8192);
  RecomputePlan no_chunks = none;
  no_chunks.loss_kept_chunks = 0;
  // No chunk kept: one shared slot remains.
  EXPECT_EQ(none_bytes - gpu_activation_bytes(c, B, L, no_chunks), 24 * 2 * n * 8192);
  EXPECT_LT(gpu_activation_bytes(c, B, L, full_recompute(c)) * 4, none_bytes);
  EXPECT_EQ(gpu_activation_bytes(c, B, L, full_recompute(c)),
            gpu_activation_bytes(c, B, L, uniform_recompute(c, true)));
  // Under TP the partial-sum buffer comes on top; under SP the residual rows are a share.
  EXPECT_GT(gpu_activation_bytes(c, B, L, none, true), none_bytes);
  EXPECT_LT(gpu_activation_bytes(c, B, L, none, true, n / 2),
            gpu_activation_bytes(c, B, L, none, true));
  RecomputePlan wrong = none;
  wrong.layers.pop_back();
  EXPECT_THROW(gpu_activation_bytes(c, B, L, wrong), Error);
  wrong = none;
  wrong.loss_kept_chunks = 26;
  EXPECT_THROW(gpu_activation_bytes(c, B, L, wrong), Error);
}

// Synthetic memory: each recomputed layer past the first of its kind saves 10, each dropped loss
// chunk saves 1; the chooser walks from none to all and stops at the first that fits.
TEST(RecomputePlan, AutoChoosesTheLeastRecomputeThatFits) {
  const ModelConfig c = model_preset("tiny-sambay-da");  // 8 layers: mamba 0, 2, 4; swa 1, 3; ...
  const int64_t chunks = loss_chunks(c);
  ASSERT_EQ(chunks, 1);
  auto bytes_of = [&](const RecomputePlan& p) {
    int64_t bytes = 1000 + p.loss_kept_chunks;
    std::vector<int> per_kind(5, 0);
    for (int i = 0; i < 8; ++i) {
      if (!p.layers[i]) bytes += 10;
      else if (per_kind[int(c.layers[i])]++ == 0) bytes += 10;  // the kind's shared set
    }
    return bytes;
  };
  const RecomputePlan none = no_recompute(c);
  const int64_t none_bytes = bytes_of(none);  // 1081
  RecomputeChoice r = choose_recompute(c, 1, 16, none_bytes, bytes_of);
  EXPECT_TRUE(r.fits);
  EXPECT_EQ(r.plan, none);
  EXPECT_EQ(r.bytes, none_bytes);
  EXPECT_NE(r.log.find("none: "), std::string::npos) << r.log;

  // The classes by bytes saved per recomputed FLOP, from the real FLOPs: sliding-window layers
  // (cheapest to recompute), then mamba, then the loss (no saving here: one chunk), then the
  // kinds of one layer, which save nothing. 20 less: the two sliding-window layers (the first
  // moves to the shared set, the second frees 10), then mamba 0 (into its set) and 2 (frees 10).
  r = choose_recompute(c, 1, 16, none_bytes - 20, bytes_of);
  EXPECT_TRUE(r.fits);
  EXPECT_EQ(r.bytes, none_bytes - 20);
  RecomputePlan expected = none;
  for (int i : {0, 1, 2, 3}) expected.layers[i] = true;
  EXPECT_EQ(r.plan, expected) << r.log;
  EXPECT_NE(r.log.find("chosen after 2 of 3"), std::string::npos) << r.log;
  // 25 less: mamba 4 too (its third layer frees 10 more).
  expected.layers[4] = true;
  EXPECT_EQ(choose_recompute(c, 1, 16, none_bytes - 25, bytes_of).plan, expected);

  // Everything recomputed: 1000 + 5 shared sets (5 kinds), no loss chunk kept.
  const int64_t all_bytes = bytes_of(full_recompute(c));
  EXPECT_EQ(all_bytes, 1050);
  r = choose_recompute(c, 1, 16, all_bytes, bytes_of);
  EXPECT_TRUE(r.fits);
  EXPECT_EQ(r.bytes, all_bytes);
  r = choose_recompute(c, 1, 16, all_bytes - 1, bytes_of);
  EXPECT_FALSE(r.fits);
  EXPECT_EQ(r.plan, full_recompute(c));
  EXPECT_NE(r.log.find("not even full recompute fits"), std::string::npos) << r.log;

  // Every budget between: the choice fits, and a larger budget never recomputes more FLOPs.
  double last_flops = 1e300;
  for (int64_t budget = all_bytes; budget <= none_bytes; ++budget) {
    r = choose_recompute(c, 1, 16, budget, bytes_of);
    ASSERT_TRUE(r.fits) << budget;
    EXPECT_LE(r.bytes, budget);
    const double flops = recompute_flops(c, 1, 16, r.plan);
    EXPECT_LE(flops, last_flops) << "budget " << budget;
    last_flops = flops;
  }
}

TEST(RecomputePlan, ResolveKeepsExplicitModesAndAutoWithoutBudgetMeansNone) {
  const ModelConfig c = model_preset("tiny-sambay");
  auto bytes_of = [&](const RecomputePlan& p) { return activation_bytes(c, 2, 16, p, 4); };
  RecomputeChoice r = resolve_recompute(RecomputeMode::all, c, 2, 16, 1, bytes_of);
  EXPECT_EQ(r.plan, full_recompute(c));
  EXPECT_FALSE(r.fits);  // 1 byte of budget: reported, not changed
  r = resolve_recompute(RecomputeMode::none, c, 2, 16, std::nullopt, bytes_of);
  EXPECT_EQ(r.plan, no_recompute(c));
  EXPECT_TRUE(r.fits);
  r = resolve_recompute(RecomputeMode::auto_choice, c, 2, 16, std::nullopt, bytes_of);
  EXPECT_EQ(r.plan, no_recompute(c));
  EXPECT_EQ(r.bytes, activation_bytes(c, 2, 16, false, 4));
  EXPECT_NE(r.log.find("keeps everything"), std::string::npos) << r.log;
  const int64_t budget = bytes_of(full_recompute(c));
  r = resolve_recompute(RecomputeMode::auto_choice, c, 2, 16, budget, bytes_of);
  EXPECT_TRUE(r.fits);
  EXPECT_LE(r.bytes, budget);
  EXPECT_NE(r.plan, no_recompute(c));
}

// The GPU's numbers for phi4-mini-flash on one H200 (139.8 GiB as CUDA reports it; state: fp32
// master, gradients and both AdamW moments, and the bf16 copy = 18 bytes a parameter; headroom as
// the engine leaves it): at 8192 tokens nothing is recomputed, and with less memory the choice
// recomputes layers one by one before the logits' chunks.
TEST(RecomputePlan, Phi4MiniFlashAt8kOnOneH200RecomputesNothing) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  const int64_t params = parameter_count(c);
  const int64_t state = 18 * params + 2 * (int64_t(1) << 20);
  const int64_t h200 = int64_t(139.8 * double(kGiB));
  const int64_t cuda_context = int64_t(0.6 * double(kGiB));
  const int64_t headroom = gpu_recompute_headroom(h200);
  auto bytes_of = [&](const RecomputePlan& p) { return gpu_activation_bytes(c, 1, 8192, p); };
  const int64_t budget = h200 - cuda_context - state - headroom;
  RecomputeChoice r = choose_recompute(c, 1, 8192, budget, bytes_of);
  std::printf("phi4-mini-flash B1 x 8192 on an H200: state %.2f GiB, budget %.2f GiB\n%s\n",
              double(state) / kGiB, double(budget) / kGiB, r.log.c_str());
  EXPECT_TRUE(r.fits);
  EXPECT_EQ(r.plan, no_recompute(c));

  // On an 80 GB H100 (79.1 GiB) it must recompute, and it still fits.
  const int64_t h100 = int64_t(79.1 * double(kGiB));
  r = choose_recompute(c, 1, 8192, h100 - cuda_context - state - gpu_recompute_headroom(h100),
                       bytes_of);
  std::printf("on an H100:\n%s\n", r.log.c_str());
  EXPECT_TRUE(r.fits);
  EXPECT_NE(r.plan, no_recompute(c));
  EXPECT_NE(r.plan, full_recompute(c));
}

}  // namespace
}  // namespace sambay
