#include "launch/throughput.h"

#include "core/check.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

namespace sambay {

namespace {

// The dense bf16 tensor-core peaks of the datasheets (half the "with sparsity" figure), by a
// word of the CUDA device name. More specific words first: "H100 NVL" before "H100".
struct PeakEntry {
  const char* words[2];  // every word must occur (upper case); the second may be null
  double tflops;
};
constexpr PeakEntry kPeaks[] = {
    {{"H200", "NVL"}, 835.5},   // H200 NVL (PCIe card)
    {{"H200", nullptr}, 989.4},  // H200 SXM (and GH200): the H100 SXM's tensor cores
    {{"H100", "PCIE"}, 756.5},  // "NVIDIA H100 PCIe"
    {{"H100", "NVL"}, 835.5},   // "NVIDIA H100 NVL"
    {{"H100", nullptr}, 989.4},  // "NVIDIA H100 80GB HBM3": SXM
    {{"A100", nullptr}, 312.0},  // SXM4 and PCIe alike
    {{"B200", nullptr}, 2250.0},
};

bool contains(std::string_view text, const char* word) {
  return !word || text.find(word) != std::string_view::npos;
}

}  // namespace

std::optional<double> peak_bf16_tflops(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const PeakEntry& e : kPeaks)
    if (contains(upper, e.words[0]) && contains(upper, e.words[1])) return e.tflops;
  return std::nullopt;
}

std::optional<double> parse_peak_tflops(const std::string& value) {
  if (value == "auto") return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || !end || *end != '\0' || !std::isfinite(v) || v <= 0)
    fail("option --peak_tflops: must be a positive number of TFLOP/s (one GPU's dense bf16 "
         "peak) or auto (from the GPU's name), got '{}'",
         value);
  return v;
}

Throughput throughput(double tokens_per_s, double flops_per_token, int gpus,
                      std::optional<double> peak_tflops) {
  SAMBAY_CHECK(gpus >= 1, "throughput of {} GPUs", gpus);
  Throughput t;
  t.tokens_per_s = tokens_per_s;
  t.tokens_per_s_per_gpu = tokens_per_s / gpus;
  t.flops_per_s_per_gpu = flops_per_token * t.tokens_per_s_per_gpu;
  if (peak_tflops) t.mfu = t.flops_per_s_per_gpu / (*peak_tflops * 1e12);
  return t;
}

}  // namespace sambay
