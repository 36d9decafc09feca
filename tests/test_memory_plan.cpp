#include "launch/memory_plan.h"

#include "core/model.h"
#include "core/param_layout.h"
#include "launch/dry_run.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace sambay {
namespace {

double item(const std::vector<MemoryItem>& items, const std::string& what) {
  double sum = 0;
  for (const MemoryItem& i : items)
    if (i.what.find(what) == 0) sum += i.bytes;
  return sum;
}

ModelConfig tp_model() {
  ModelConfig c = model_preset("tiny-sambay-da");
  c.vocab = 257, c.n_heads = 8, c.n_kv_heads = 4;
  return c;
}

TEST(MemoryPlan, ACpuRankHoldsItsShardAndItsPartOfTheOptimizer) {
  const ModelConfig c = tp_model();
  const double n = double(build_param_layout(c).total);
  const RankMemoryPlan one = plan_rank_memory({c, 1, 1, 1 << 20, false, true, 1000});
  // Weights, gradients, reduced gradient, m, v and the snapshot of weights, m and v: 32 bytes
  // per parameter, and the activations.
  EXPECT_DOUBLE_EQ(one.host_bytes(), 32 * n + 1000);
  EXPECT_DOUBLE_EQ(one.owned_bytes, 12 * n);
  EXPECT_TRUE(one.device.empty());
  // Without background saves the snapshot holds the weights only (the moments are written
  // from the optimizer's own buffers).
  EXPECT_DOUBLE_EQ(plan_rank_memory({c, 1, 1, 1 << 20, false, false, 0}).host_bytes(), 24 * n);
  // Two ZeRO ranks: the optimizer's share and the snapshot halve (within a bucket's padding),
  // plus one bucket's staging.
  const int64_t bucket = 512;
  const RankMemoryPlan dp2 = plan_rank_memory({c, 1, 2, bucket, false, true, 1000});
  EXPECT_NEAR(dp2.owned_bytes, 6 * n, 12.0 * bucket);
  EXPECT_NEAR(item(dp2.host, "gradient bucket"), 4.0 * bucket, 4.0);
  EXPECT_NEAR(dp2.host_bytes(), 8 * n + 12 * n + 1000 + 4.0 * bucket, 24.0 * bucket);
  // Two TP ranks: every sharded tensor halves, the replicated ones (norms, embedding) stay.
  const double shard = double(build_param_layout(tensor_parallel_config(c, 2)).total);
  EXPECT_LT(shard, 0.75 * n);
  const RankMemoryPlan tp2 = plan_rank_memory({c, 2, 1, 1 << 20, false, true, 1000});
  EXPECT_DOUBLE_EQ(tp2.host_bytes(), 32 * shard + 1000);
}

TEST(MemoryPlan, AGpuRankKeepsOnlyItsPinnedSnapshotOnTheHost) {
  const ModelConfig c = model_preset("phi4-mini-flash");
  const double n = double(build_param_layout(c).total);
  const RankMemoryPlan p = plan_rank_memory({c, 1, 1, 1 << 23, true, true, 30e9});
  ASSERT_EQ(p.host.size(), 1u);
  EXPECT_NE(p.host[0].what.find("pinned"), std::string::npos);
  EXPECT_DOUBLE_EQ(p.host_bytes(), 12 * n);  // about 46 GB: 2 GB + 1.2 x this is the target
  EXPECT_DOUBLE_EQ(p.device_bytes(), 6 * n + 4 * n + 8 * n + 30e9);
  // Eight ZeRO ranks: an eighth of the state each, host and device; on the host the larger of
  // the snapshot and what a resume stages (the largest tensor, the embedding, and the owned
  // moments).
  const RankMemoryPlan p8 = plan_rank_memory({c, 1, 8, 1 << 23, true, true, 30e9});
  EXPECT_NEAR(p8.owned_bytes, 12 * n / 8, 12.0 * (1 << 23));
  const double embedding = 4.0 * double(c.vocab * c.d_model);
  EXPECT_DOUBLE_EQ(p8.host_bytes(),
                   std::max(p8.owned_bytes, embedding + p8.owned_bytes * 8 / 12));
  EXPECT_NEAR(item(p8.device, "AdamW"), 8 * n / 8, 8.0 * (1 << 23));
  EXPECT_LT(p8.host_bytes(), 2e9 + 1.2 * p8.owned_bytes);
}

TEST(MemoryPlan, ThisProcessReportsItsResidentMemory) {
  const double now = resident_bytes(), peak = peak_resident_bytes();
  EXPECT_GT(now, 1e6);
  EXPECT_GE(peak, now);
  EXPECT_GT(host_memory_total(), peak);
}

TEST(DryRun, ExpectedSpeedComesFromTheMeasuredStepOfThePreset) {
  const ModelConfig c = model_preset("sambay-da-1b");
  const double f = training_flops_per_token(c, 4096);
  // The measured shape itself on the measured GPU's peak: the measured tokens/s.
  const auto e = expected_speed("sambay-da-1b", 4, 4096, f, 989.4);
  ASSERT_TRUE(e.has_value());
  EXPECT_NEAR(e->tokens_per_s_per_gpu, 4 * 4096 / 0.3319, 1e-6 * 49000);
  EXPECT_NEAR(e->mfu, f * 4 * 4096 / 0.3319 / 989.4e12, 1e-9);
  // Twice the peak: twice the tokens/s at the same MFU; twice the FLOPs per token: half.
  EXPECT_NEAR(expected_speed("sambay-da-1b", 4, 4096, f, 2 * 989.4)->tokens_per_s_per_gpu,
              2 * e->tokens_per_s_per_gpu, 1e-6 * e->tokens_per_s_per_gpu);
  EXPECT_NEAR(expected_speed("sambay-da-1b", 4, 4096, 2 * f, 989.4)->tokens_per_s_per_gpu,
              e->tokens_per_s_per_gpu / 2, 1e-6 * e->tokens_per_s_per_gpu);
  // The measured shape nearest in tokens per micro-batch: 1 x 9000 takes 1 x 8192; a preset
  // never measured gets no estimate.
  EXPECT_NE(expected_speed("sambay-da-1b", 1, 9000, f, 989.4)->basis.find("1 x 8192"),
            std::string::npos);
  EXPECT_FALSE(expected_speed("tiny-sambay-da", 1, 32, f, 989.4).has_value());
}

}  // namespace
}  // namespace sambay
