#include "launch/throughput.h"

#include "core/check.h"

#include <gtest/gtest.h>

#include <string>

namespace sambay {
namespace {

TEST(Throughput, PeaksComeFromTheDeviceNameAsCudaReportsIt) {
  const std::pair<const char*, double> names[] = {
      {"NVIDIA H100 80GB HBM3", 989.4},
      {"cuda: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", 989.4},
      {"NVIDIA H100 PCIe", 756.5},
      {"NVIDIA H100 NVL", 835.5},
      {"NVIDIA H200", 989.4},
      {"NVIDIA H200 NVL", 835.5},
      {"NVIDIA GH200 480GB", 989.4},
      {"NVIDIA A100-SXM4-80GB", 312.0},
      {"NVIDIA A100-PCIE-40GB", 312.0},
      {"NVIDIA A100 80GB PCIe", 312.0},
      {"NVIDIA B200", 2250.0},
      {"nvidia h200", 989.4},  // case does not matter
  };
  for (const auto& [name, peak] : names) {
    ASSERT_TRUE(peak_bf16_tflops(name).has_value()) << name;
    EXPECT_DOUBLE_EQ(*peak_bf16_tflops(name), peak) << name;
  }
  for (const char* unknown : {"NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-32GB", "cpu", ""})
    EXPECT_FALSE(peak_bf16_tflops(unknown).has_value()) << unknown;
}

TEST(Throughput, PeakTflopsOptionIsAutoOrAPositiveNumber) {
  EXPECT_FALSE(parse_peak_tflops("auto").has_value());
  EXPECT_DOUBLE_EQ(*parse_peak_tflops("989.4"), 989.4);
  EXPECT_DOUBLE_EQ(*parse_peak_tflops("1e3"), 1000.0);
  for (const char* bad : {"", "0", "-5", "inf", "nan", "900TF", "fast"}) {
    try {
      parse_peak_tflops(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("option --peak_tflops"), std::string::npos) << e.what();
    }
  }
}

TEST(Throughput, MfuIsPerGpuAgainstOneGpusPeak) {
  // 8 GPUs together at 80,000 tokens/s of a model of 6e9 FLOPs per token: 10,000 tokens/s and
  // 60 TFLOP/s per GPU; against a 100 TFLOP/s peak that is 60%, not 480%.
  const Throughput t = throughput(80000, 6e9, 8, 100.0);
  EXPECT_DOUBLE_EQ(t.tokens_per_s, 80000);
  EXPECT_DOUBLE_EQ(t.tokens_per_s_per_gpu, 10000);
  EXPECT_DOUBLE_EQ(t.flops_per_s_per_gpu, 6e13);
  ASSERT_TRUE(t.mfu.has_value());
  EXPECT_DOUBLE_EQ(*t.mfu, 0.6);
  // One GPU: the job's numbers.
  const Throughput one = throughput(10000, 6e9, 1, 100.0);
  EXPECT_DOUBLE_EQ(*one.mfu, 0.6);
  EXPECT_DOUBLE_EQ(one.tokens_per_s_per_gpu, 10000);
  // No peak: no MFU, the per-GPU rates all the same.
  const Throughput cpu = throughput(80000, 6e9, 8, std::nullopt);
  EXPECT_FALSE(cpu.mfu.has_value());
  EXPECT_DOUBLE_EQ(cpu.flops_per_s_per_gpu, 6e13);
  EXPECT_THROW(throughput(1, 1, 0, std::nullopt), Error);
}

}  // namespace
}  // namespace sambay
