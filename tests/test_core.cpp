#include "core/arena.h"
#include "core/bf16.h"
#include "core/cuda_runtime.h"
#include "core/philox.h"
#include "core/tensor.h"
#include "tests/gpu_test.h"
#include "tests/test_util.h"

#include <cmath>
#include <vector>

namespace sambay {
namespace {

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa.
  EXPECT_EQ(to_bf16(1.0f + 1.0f / 256).bits, to_bf16(1.0f).bits);
  // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up.
  EXPECT_EQ(to_float(to_bf16(1.0f + 3.0f / 256)), 1.015625f);
  // Just above halfway rounds up.
  EXPECT_EQ(to_float(to_bf16(1.0f + 1.0f / 256 + 1.0f / 65536)), 1.0078125f);
  EXPECT_EQ(to_float(to_bf16(-2.5f)), -2.5f);
  EXPECT_TRUE(std::isinf(to_float(to_bf16(INFINITY))));
  EXPECT_TRUE(std::isnan(to_float(to_bf16(NAN))));
  // The largest float rounds to infinity in bf16 (its mantissa overflows the exponent).
  EXPECT_TRUE(std::isinf(to_float(to_bf16(3.4028235e38f))));
}

TEST(Bf16, RelativeErrorIsAtMostHalfAnUlp) {
  auto v = testing::random_normal(10000, 11, 100.0);
  for (double d : v) {
    float f = static_cast<float>(d);
    float r = to_float(to_bf16(f));
    EXPECT_LE(std::abs(r - f), std::abs(f) * (1.0f / 256)) << f;
  }
}

TEST(Philox, MatchesPublishedKnownAnswer) {
  // Random123's known-answer test for philox4x32-10 with counter = key = 0.
  auto r = philox4x32(0, 0, 0);
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

TEST(Philox, NormalStreamHasUnitMomentsAndIsIndexAddressed) {
  const int64_t n = 200000;
  std::vector<double> v(n);
  fill_normal(v.data(), n, 0.0, 1.0, 42, 3);
  double mean = 0, var = 0;
  for (double x : v) mean += x;
  mean /= n;
  for (double x : v) var += (x - mean) * (x - mean);
  var /= n;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
  // Element i does not depend on what else was drawn: a shifted fill lines up.
  std::vector<double> tail(10);
  fill_normal(tail.data(), 10, 0.0, 1.0, 42, 3, /*offset=*/1000);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(tail[i], v[1000 + i]);
}

TEST(Philox, BelowIsInRangeAndCoversIt) {
  std::vector<int> counts(7);
  for (int i = 0; i < 7000; ++i) {
    uint64_t k = philox_below(1, 2, i, 7);
    ASSERT_LT(k, 7u);
    counts[k]++;
  }
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
}

TEST(Tensor, ViewsReshapeAndSlice) {
  std::vector<float> buf(24);
  Tensor t = tensor_view(buf.data(), DType::f32, Device::cpu, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.strides[0], 12);
  Tensor s = t.slice(2, 1, 2);
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.ptr<float>(), buf.data() + 1);
  EXPECT_THROW(s.reshape({4, 2}), Error);
  EXPECT_THROW(t.reshape({5, 5}), Error);
  EXPECT_THROW(t.ptr<double>(), Error);
  EXPECT_THROW(t.slice(1, 2, 2), Error);
  EXPECT_EQ(t.reshape({6, 4}).size(0), 6);
}

TEST(Arena, AlignsTracksPeakAndReportsExhaustion) {
  Arena arena(Device::cpu, 4096, "test");
  Tensor a = arena.alloc(DType::f32, {3});
  Tensor b = arena.alloc(DType::bf16, {5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % 256, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data) % 256, 0u);
  size_t mark = arena.used;
  arena.alloc(DType::f64, {100});
  EXPECT_GT(arena.high_water, mark);
  arena.release_to(mark);
  EXPECT_EQ(arena.used, mark);
  try {
    arena.alloc(DType::f32, {100000});
    FAIL() << "expected out-of-memory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("arena 'test'"), std::string::npos) << e.what();
  }
}

TEST(Bf16Gpu, ConversionMatchesHostRounding) {
  SAMBAY_REQUIRE_GPU();
  auto v = testing::random_normal(100003, 12, 10.0);
  std::vector<float> f(v.begin(), v.end());
  f[0] = NAN, f[1] = INFINITY, f[2] = 1.0f + 1.0f / 256, f[3] = 3.4028235e38f;
  Arena arena(Device::cuda, f.size() * 6 + 1024, "bf16 test");
  Tensor in = arena.alloc(DType::f32, {static_cast<int64_t>(f.size())});
  Tensor out = arena.alloc(DType::bf16, {static_cast<int64_t>(f.size())});
  cuda_copy_to_device(in.data, f.data(), in.nbytes());
  convert_to_bf16_cuda(in.ptr<float>(), out.ptr<bf16>(), in.numel());
  std::vector<bf16> got(f.size());
  cuda_copy_to_host(got.data(), out.data, out.nbytes());
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(got[i].bits, to_bf16(f[i]).bits) << i;
}

}  // namespace
}  // namespace sambay
