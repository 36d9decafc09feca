// Multi-tensor AdamW (with the clipping coefficient) and the gradient norm on the GPU against the
// CPU optimizer.
#include <fmt/format.h>

#include <cmath>
#include <limits>
#include <span>

#include "core/check.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "tests/gpu_compare.h"
#include "tests/gpu_test.h"

namespace sambay {
namespace {

using testing::DeviceBuffer;

constexpr double kBeta1 = 0.9, kBeta2 = 0.95, kEps = 1e-8;

// Runs `steps` AdamW steps on the CPU (group by group) and on the GPU (one launch a step) from the
// same state with the same fresh gradients, and compares everything.
// grad_scale: the clipping coefficient the GPU applies as it reads the gradients; the CPU
// scales its copy first (the same fp32 products).
void expect_adamw_matches_cpu(int64_t n, const std::vector<AdamWGroup>& groups, int steps,
                              uint64_t seed, float grad_scale = 1.f) {
  // Nonzero starting moments, as after earlier steps.
  std::vector<float> p = testing::to_f32(testing::random_normal(n, seed));
  std::vector<float> m = testing::to_f32(testing::random_normal(n, seed + 1, 0.01));
  std::vector<float> v = testing::to_f32(testing::random_uniform(n, seed + 2, 0.0, 1e-4));
  const std::vector<float> p0 = p, m0 = m, v0 = v;

  DeviceBuffer<float> d_p(p), d_m(m), d_v(v), d_g(n);
  DeviceBuffer<bf16> d_p16(n);
  d_p16.poison();
  DeviceBuffer<AdamWGroup> d_groups(groups);
  for (int step = 1; step <= steps; ++step) {
    const auto g = testing::to_f32(testing::random_normal(n, seed + 10 + step, 0.1));
    std::vector<float> scaled = g;
    for (float& x : scaled) x *= grad_scale;
    for (const AdamWGroup& grp : groups)
      adamw_update(p.data() + grp.offset, scaled.data() + grp.offset, m.data() + grp.offset,
                   v.data() + grp.offset, grp.numel,
                   AdamWHyper{double(grp.lr), kBeta1, kBeta2, kEps, double(grp.weight_decay)}, step);
    d_g.upload(g);
    adamw_update_cuda(d_p.ptr, d_g.ptr, d_m.ptr, d_v.ptr, d_p16.ptr, n, d_groups.ptr,
                      static_cast<int>(groups.size()), kBeta1, kBeta2, kEps, step, grad_scale,
                      nullptr);
    EXPECT_EQ(d_g.download(), g) << "the gradients are read, not scaled in place";
  }
  const auto gp = d_p.download(), gm = d_m.download(), gv = d_v.download();
  EXPECT_LT(testing::relative_error(gp, testing::to_f64(p)), 1e-5);
  EXPECT_LT(testing::relative_error(gm, testing::to_f64(m)), 1e-5);
  EXPECT_LT(testing::relative_error(gv, testing::to_f64(v)), 1e-5);
  // The parameters moved by far more than the tolerance above...
  EXPECT_GT(testing::relative_error(gp, testing::to_f64(p0)), 1e-4);
  // ... and the updates themselves agree. A parameter is rounded to fp32 (2^-24 of |p| ~ 1) at
  // every step while an update is ~lr ~ 1e-4..1e-3, so the updates agree to ~1e-4 relative;
  // a wrong update formula (bias correction, decay order) is off by percents.
  std::vector<double> gpu_update(n), cpu_update(n);
  for (int64_t i = 0; i < n; ++i) {
    gpu_update[i] = double(gp[i]) - double(p0[i]);
    cpu_update[i] = double(p[i]) - double(p0[i]);
  }
  EXPECT_LT(testing::relative_error(gpu_update, cpu_update), 1e-3);

  std::vector<bool> in_group(n, false);
  for (const AdamWGroup& grp : groups)
    for (int64_t i = grp.offset; i < grp.offset + grp.numel; ++i) in_group[i] = true;
  const auto p16 = d_p16.download();
  for (int64_t i = 0; i < n; ++i) {
    if (in_group[i]) {
      ASSERT_EQ(p16[i].bits, to_bf16(gp[i]).bits) << "bf16 copy of element " << i;
    } else {  // elements in no group are not touched at all
      ASSERT_EQ(p16[i].bits, 0xFFFF) << "element " << i;
      ASSERT_EQ(gp[i], p0[i]) << "element " << i;
      ASSERT_EQ(gm[i], m0[i]) << "element " << i;
      ASSERT_EQ(gv[i], v0[i]) << "element " << i;
    }
  }
}

TEST(AdamWCuda, FewGroupsAcrossTilesMatchCpu) {
  SAMBAY_REQUIRE_GPU();
  // Groups of different lr / weight decay, a gap (1003..1010) in no group, and ends that fall
  // inside the 4096-element tiles of the kernel.
  const std::vector<AdamWGroup> groups = {{0, 1000, 1e-3f, 0.1f},
                                          {1000, 3, 2e-3f, 0.0f},
                                          {1010, 4990, 5e-4f, 0.05f},
                                          {6000, 4007, 1e-3f, 0.0f}};
  expect_adamw_matches_cpu(10007, groups, 5, 100);
}

TEST(AdamWCuda, ManySmallGroupsMatchCpu) {
  SAMBAY_REQUIRE_GPU();
  std::vector<AdamWGroup> groups;
  int64_t offset = 0;
  for (int i = 0; i < 600; ++i) {
    const int64_t numel = 1 + (i * 7) % 37;
    groups.push_back({offset, numel, float(1e-4 * (1 + i % 5)), float(0.02 * (i % 3))});
    offset += numel + (i % 4 == 0 ? 2 : 0);  // some gaps
  }
  expect_adamw_matches_cpu(offset + 5, groups, 3, 200);
}

TEST(AdamWCuda, LargeSingleGroupMatchesCpu) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = (int64_t{1} << 20) + 17;
  expect_adamw_matches_cpu(n, {{0, n, 3e-4f, 0.1f}}, 2, 300);
}

// Gradient clipping's coefficient, applied as the gradients are read.
TEST(AdamWCuda, GradientScaleMatchesCpuOnScaledGradients) {
  SAMBAY_REQUIRE_GPU();
  const std::vector<AdamWGroup> groups = {{0, 3000, 1e-3f, 0.1f}, {3000, 2001, 2e-3f, 0.f}};
  expect_adamw_matches_cpu(5001, groups, 3, 400, 0.37f);
}

TEST(AdamWCuda, StepZeroThrows) {
  SAMBAY_REQUIRE_GPU();
  DeviceBuffer<float> p(4), g(4), m(4), v(4);
  DeviceBuffer<AdamWGroup> groups(std::vector<AdamWGroup>{{0, 4, 1e-3f, 0.0f}});
  EXPECT_THROW(adamw_update_cuda(p.ptr, g.ptr, m.ptr, v.ptr, nullptr, 4, groups.ptr, 1, kBeta1,
                                 kBeta2, kEps, 0, 1.f, nullptr),
               Error);
}

// ---------------------------------------------------------------------------------------------

class GradNormCudaTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(GradNormCudaTest, MatchesCpuAndIsReproducible) {
  SAMBAY_REQUIRE_GPU();
  const int64_t n = GetParam();
  const auto g = testing::to_f32(testing::random_normal(n + 1, 1, 0.3));
  const double expected = global_grad_norm({std::span<const float>(g.data() + 1, n)});
  DeviceBuffer<float> d_g(g);
  // From element 0 (16-byte aligned) and from element 1 (only 4-byte aligned: scalar path).
  const double aligned = global_grad_norm_cuda(d_g.ptr, n, nullptr);
  const double expected_aligned = global_grad_norm({std::span<const float>(g.data(), n)});
  EXPECT_NEAR(aligned, expected_aligned, 1e-12 * expected_aligned);
  const double shifted = global_grad_norm_cuda(d_g.ptr + 1, n, nullptr);
  EXPECT_NEAR(shifted, expected, 1e-12 * expected);
  EXPECT_EQ(global_grad_norm_cuda(d_g.ptr + 1, n, nullptr), shifted);  // bitwise reproducible
}

INSTANTIATE_TEST_SUITE_P(Lengths, GradNormCudaTest,
                         ::testing::Values(int64_t{1}, int64_t{3}, int64_t{1000},
                                           int64_t{4097}, (int64_t{1} << 20) + 3,
                                           int64_t{25000000}),
                         [](const auto& info) { return fmt::format("n{}", info.param); });

TEST(GradNormCuda, NonFiniteGradientGivesNonFiniteNorm) {
  SAMBAY_REQUIRE_GPU();
  auto g = testing::to_f32(testing::random_normal(5000, 2));
  g[1234] = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer<float> d_g(g);
  EXPECT_FALSE(all_finite(global_grad_norm_cuda(d_g.ptr, 5000, nullptr)));
  g[1234] = std::numeric_limits<float>::infinity();
  d_g.upload(g);
  EXPECT_FALSE(all_finite(global_grad_norm_cuda(d_g.ptr, 5000, nullptr)));
}

}  // namespace
}  // namespace sambay
