#include "tools/sweep/perf_model.h"

#include "core/check.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>

namespace sambay::sweep {
namespace {

// A 3.8B-like profile and an H100-like cluster; the numbers only need to be plausible.
StepProfile profile(double optimizer_seconds = 0.06) {
  StepProfile p;
  p.seconds_per_token = 6e-5;
  p.optimizer_seconds = optimizer_seconds;
  p.params = 3.85e9;
  p.d_model = 2560;
  p.n_layers = 32;
  return p;
}

ClusterSpec cluster() {
  ClusterSpec c;
  c.gpus_per_node = 8;
  c.nvlink_bandwidth = 360e9;
  c.nvlink_latency = 5e-6;
  c.network_bandwidth = 45e9;
  c.network_latency = 10e-6;
  return c;
}

ClusterSpec infinitely_fast(ClusterSpec c) {
  c.nvlink_bandwidth = c.network_bandwidth = std::numeric_limits<double>::infinity();
  c.nvlink_latency = c.network_latency = 0;
  return c;
}

ParallelConfig run(int64_t gpus, int64_t tp = 1) {
  ParallelConfig pc;
  pc.gpus = gpus;
  pc.tp = tp;
  pc.tokens_per_replica = 8 * 4096;
  pc.micro_batch_tokens = 4096;
  return pc;
}

TEST(PerfModel, OneGpuStepIsTheSingleGpuProfile) {
  const StepPrediction p = predict_step(profile(), cluster(), run(1));
  EXPECT_DOUBLE_EQ(p.compute, 8 * 4096 * 6e-5);
  EXPECT_DOUBLE_EQ(p.step, p.compute + 0.06);
  EXPECT_EQ(p.tp_comm, 0);
  EXPECT_EQ(p.exposed_dp_comm, 0);
  EXPECT_DOUBLE_EQ(p.efficiency, 1);
  EXPECT_DOUBLE_EQ(p.comm_efficiency, 1);
  EXPECT_EQ(p.micro_batches, 8);
}

struct Size {
  int64_t gpus, tp;
};

std::ostream& operator<<(std::ostream& os, const Size& s) {
  return os << s.gpus << " GPUs, tp " << s.tp;
}

class PerfScaleTest : public ::testing::TestWithParam<Size> {};

// Free communication and no optimizer: N GPUs do exactly N times the work of one.
TEST_P(PerfScaleTest, InfiniteBandwidthGivesEfficiencyOne) {
  const auto [gpus, tp] = GetParam();
  const StepPrediction p = predict_step(profile(0), infinitely_fast(cluster()), run(gpus, tp));
  EXPECT_DOUBLE_EQ(p.tp_comm + p.exposed_dp_comm, 0);
  EXPECT_NEAR(p.efficiency, 1, 1e-12);
  EXPECT_DOUBLE_EQ(p.comm_efficiency, 1);
}

// With an optimizer, free communication leaves only the sharded update: above 1, never below.
TEST_P(PerfScaleTest, ShardedOptimizerIsTheOnlyGainWithFreeCommunication) {
  const auto [gpus, tp] = GetParam();
  const StepPrediction p = predict_step(profile(), infinitely_fast(cluster()), run(gpus, tp));
  EXPECT_DOUBLE_EQ(p.optimizer, 0.06 / gpus);
  EXPECT_DOUBLE_EQ(p.step, p.compute + p.optimizer);
  EXPECT_GE(p.efficiency, 1);
}

// Real links cost something once there is more than one GPU, and never more than free links.
TEST_P(PerfScaleTest, FiniteBandwidthCostsTime) {
  const auto [gpus, tp] = GetParam();
  const StepPrediction real = predict_step(profile(), cluster(), run(gpus, tp));
  const StepPrediction ideal = predict_step(profile(), infinitely_fast(cluster()), run(gpus, tp));
  EXPECT_GT(real.step, ideal.step);
  EXPECT_LT(real.comm_efficiency, 1);
  EXPECT_GT(real.comm_efficiency, 0);
}

INSTANTIATE_TEST_SUITE_P(Sizes, PerfScaleTest,
                         ::testing::Values(Size{2, 1}, Size{8, 1}, Size{16, 1}, Size{1024, 1},
                                           Size{2, 2}, Size{64, 8}, Size{1024, 4}),
                         [](const auto& info) {
                           return "gpus" + std::to_string(info.param.gpus) + "_tp" +
                                  std::to_string(info.param.tp);
                         });

TEST(PerfModel, RingCollectiveFormula) {
  EXPECT_EQ(ring_collective_seconds(1e9, 1, 1e9, 1e-5), 0);
  EXPECT_DOUBLE_EQ(ring_collective_seconds(8e9, 4, 2e9, 1e-5), 3.0 / 4 * 4 + 3e-5);
}

// Two GPUs of one node, by hand: one bucket each way over NVLink, hidden under the last
// micro-batch's backward / first forward except for that bucket itself.
TEST(PerfModel, TwoGpusInOneNodeByHand) {
  ParallelConfig pc = run(2);
  pc.bucket_params = 1e12;  // one bucket
  const StepPrediction p = predict_step(profile(), cluster(), pc);
  const double rs = 0.5 * 3.85e9 * 2 / 360e9 + 5e-6;
  EXPECT_EQ(p.buckets, 1);
  EXPECT_DOUBLE_EQ(p.grad_reduce_scatter, rs);
  EXPECT_DOUBLE_EQ(p.param_all_gather, rs);
  EXPECT_DOUBLE_EQ(p.exposed_dp_comm, 2 * rs);  // a single bucket cannot overlap
  EXPECT_DOUBLE_EQ(p.step, p.compute + 2 * rs + 0.03);
  pc.bucket_params = 0;  // Megatron's 4e7-parameter buckets: everything but one hides
  const StepPrediction q = predict_step(profile(), cluster(), pc);
  EXPECT_EQ(q.buckets, 97);  // ceil(3.85e9 / 4e7)
  EXPECT_NEAR(q.exposed_dp_comm, (q.grad_reduce_scatter + q.param_all_gather) / 97, 1e-15);
}

TEST(PerfModel, SlowerNetworkLowersEfficiencyAcrossNodes) {
  ClusterSpec slow = cluster();
  slow.network_bandwidth = 1e9;
  ParallelConfig pc = run(64);
  pc.overlap_grad_reduce = pc.overlap_param_gather = false;
  const double fast_eff = predict_step(profile(), cluster(), pc).efficiency;
  const double slow_eff = predict_step(profile(), slow, pc).efficiency;
  EXPECT_LT(slow_eff, fast_eff);
  // Inside one node the network does not matter.
  EXPECT_DOUBLE_EQ(predict_step(profile(), slow, run(8)).step,
                   predict_step(profile(), cluster(), run(8)).step);
}

TEST(PerfModel, BucketsGrowWithDataParallelSizeAsInMegatron) {
  const StepPrediction p = predict_step(profile(), cluster(), run(1024));
  EXPECT_EQ(p.buckets, 4);  // ceil(3.85e9 / max(4e7, 1e6 * 1024))
}

TEST(PerfModel, RejectsImpossibleLayouts) {
  EXPECT_THROW(predict_step(profile(), cluster(), run(8, 3)), Error);   // tp does not divide
  EXPECT_THROW(predict_step(profile(), cluster(), run(32, 16)), Error);  // tp spans nodes
  ParallelConfig pc = run(8);
  pc.micro_batch_tokens = 1e9;
  EXPECT_THROW(predict_step(profile(), cluster(), pc), Error);
}

}  // namespace
}  // namespace sambay::sweep
