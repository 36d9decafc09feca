// Training throughput as a job of several GPUs reports it: model FLOPs utilisation per GPU
// against the GPU's own dense bf16 peak, and tokens/s per GPU beside the job's total.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sambay {

// The dense (no sparsity) bf16 tensor-core peak of a GPU in TFLOP/s, from its CUDA device name
// (cudaDeviceProp::name, e.g. "NVIDIA H100 80GB HBM3"), per the vendor's datasheets (half the
// "with sparsity" figure): H100 SXM and H200 SXM 989.4, H100 PCIe 756.5, H100 NVL and H200 NVL
// 835.5, A100 312, B200 2250. Nothing for another device (then --peak_tflops gives it).
std::optional<double> peak_bf16_tflops(std::string_view device_name);

// --peak_tflops: "auto" (nothing: take the table's) or a positive finite number; anything
// else fails naming the option.
std::optional<double> parse_peak_tflops(const std::string& value);

struct Throughput {
  double tokens_per_s = 0;          // the whole job
  double tokens_per_s_per_gpu = 0;  // per GPU (per rank on the CPU)
  double flops_per_s_per_gpu = 0;
  std::optional<double> mfu;        // fraction of one GPU's peak, per GPU; none without a peak
};

// tokens_per_s of the whole job on `gpus` devices (ranks), each with the given peak (TFLOP/s,
// none: no MFU); flops_per_token: the model's training FLOPs per token.
Throughput throughput(double tokens_per_s, double flops_per_token, int gpus,
                      std::optional<double> peak_tflops);

}  // namespace sambay
