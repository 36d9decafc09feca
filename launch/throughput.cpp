#include "launch/throughput.h"

#include "core/check.h"

#include <cctype>
#include <cmath>
#include <cstdlib>

namespace sambay {

namespace {

bool contains(std::string_view text, std::string_view word) {
  return text.find(word) != std::string_view::npos;
}

}  // namespace

std::optional<double> peak_bf16_tflops(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (contains(upper, "H200")) return 989.4;  // the H100 SXM's tensor cores, more memory
  if (contains(upper, "H100")) return contains(upper, "PCIE") ? 756.0 : 989.4;
  if (contains(upper, "A100")) return 312.0;  // SXM and PCIe alike
  if (contains(upper, "B200")) return 2250.0;
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
