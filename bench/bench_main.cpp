// sambay_bench: runs the registered kernel benchmarks and prints time, TFLOP/s, GB/s and the
// fraction of the ceilings measured on this GPU in the same run (a large bf16 GEMM, a large
// device-to-device copy and, for kernels bound by exponentials, the exp2 rate).
#include "bench/anchors.h"
#include "bench/bench.h"
#include "core/cuda_check.h"
#include "core/cuda_runtime.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

namespace sambay::bench {

namespace {
std::map<std::string, BenchFn>& registry() {
  static std::map<std::string, BenchFn> r;
  return r;
}

void fill_random_bf16(void* dst, size_t n) {
  std::vector<__nv_bfloat16> h(n);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& v : h) v = __float2bfloat16(dist(rng));
  SAMBAY_CUDA_CHECK(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice));
}
}  // namespace

int register_benchmark(const char* name, BenchFn fn) {
  registry()[name] = fn;
  return 0;
}

double Context::time_ms(const std::function<void()>& fn, int warmup, int repeats) const {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  SAMBAY_CUDA_CHECK(cudaEventCreate(&start));
  SAMBAY_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < repeats; ++i) {
    SAMBAY_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    SAMBAY_CUDA_CHECK(cudaEventRecord(stop, stream));
    SAMBAY_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SAMBAY_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// The ceilings: an 8192^3 bf16 GEMM (cuBLAS, fp32 accumulate) and a 4 GiB copy.
static void measure_ceilings(Context& ctx, double& tflops, double& gbps) {
  const int n = 8192;
  void *a, *b, *c;
  SAMBAY_CUDA_CHECK(cudaMalloc(&a, size_t(n) * n * 2));
  SAMBAY_CUDA_CHECK(cudaMalloc(&b, size_t(n) * n * 2));
  SAMBAY_CUDA_CHECK(cudaMalloc(&c, size_t(n) * n * 2));
  fill_random_bf16(a, size_t(n) * n);
  fill_random_bf16(b, size_t(n) * n);
  cublasHandle_t h;
  cublasCreate(&h);
  cublasSetStream(h, ctx.stream);
  const float one = 1, zero = 0;
  double ms = ctx.time_ms([&] {
    cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n,
                 &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  });
  tflops = 2.0 * n * n * double(n) / (ms * 1e-3) / 1e12;
  cublasDestroy(h);
  cudaFree(a), cudaFree(b), cudaFree(c);
  const size_t bytes = size_t(2) << 30;
  void *src, *dst;
  SAMBAY_CUDA_CHECK(cudaMalloc(&src, bytes));
  SAMBAY_CUDA_CHECK(cudaMalloc(&dst, bytes));
  SAMBAY_CUDA_CHECK(cudaMemset(src, 1, bytes));
  ms = ctx.time_ms([&] { cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx.stream); });
  gbps = 2.0 * bytes / (ms * 1e-3) / 1e9;  // read + write
  cudaFree(src), cudaFree(dst);
}

}  // namespace sambay::bench

// Usage: sambay_bench [FILTER] [--anchors FILE]. FILTER selects benchmarks by substrings of their
// names, separated by '|' (e.g. "attention|scan"); FILE is
// the anchor script's output from the same machine (anchors.h), printed beside each result.
int main(int argc, char** argv) {
  using namespace sambay::bench;
  std::string filter, anchor_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--anchors" && i + 1 < argc)
      anchor_path = argv[++i];
    else if (arg.rfind("--", 0) == 0) {
      fmt::print(stderr, "sambay_bench: unknown option {} (usage: sambay_bench [FILTER] "
                         "[--anchors FILE])\n", arg);
      return 2;
    } else
      filter = arg;
  }
  if (sambay::cuda_device_count() == 0) {
    fmt::print(stderr, "sambay_bench: no CUDA device\n");
    return 1;
  }
  Anchors anchors;
  if (!anchor_path.empty()) anchors = Anchors::read(anchor_path);
  std::vector<Result> results;
  Context ctx;
  SAMBAY_CUDA_CHECK(cudaStreamCreate(&ctx.stream));
  ctx.results = &results;
  double peak_tflops = 0, peak_gbps = 0;
  measure_ceilings(ctx, peak_tflops, peak_gbps);
  const double exp2_rate = measure_exp2_rate(ctx);
  fmt::print("device: {}\nceilings measured here: bf16 GEMM 8192^3 {:.0f} TFLOP/s, "
             "device copy {:.0f} GB/s, ex2.approx {:.2f} T/s\n\n",
             sambay::cuda_device_description(), peak_tflops, peak_gbps, exp2_rate / 1e12);
  // FILTER: substrings separated by '|'; a benchmark runs when its name holds any of them.
  auto selected = [&](const std::string& name) {
    size_t start = 0;
    while (true) {
      const size_t bar = filter.find('|', start);
      const std::string part = filter.substr(start, bar == std::string::npos ? bar : bar - start);
      if (name.find(part) != std::string::npos) return true;
      if (bar == std::string::npos) return false;
      start = bar + 1;
    }
  };
  for (auto& [name, fn] : registry())
    if (selected(name)) fn(ctx);
  // anchor ms and x anchor: the anchor's time and its ratio to sambay's (> 1: sambay is faster).
  fmt::print("{:<52} {:>9} {:>8} {:>7} {:>8} {:>7} {:>10} {:>9}\n", "benchmark", "ms", "TFLOP/s",
             "%peak", "GB/s", "%peak", "anchor ms", "x anchor");
  for (const Result& r : results) {
    const double tf = r.flops / (r.ms * 1e-3) / 1e12, gb = r.bytes / (r.ms * 1e-3) / 1e9;
    std::string vs;
    if (!r.anchor.empty()) {
      const auto a = anchors.ms(r.anchor);
      vs = a ? fmt::format("{:>10.3f} {:>8.2f}x", *a, *a / r.ms) : fmt::format("{:>10} {:>9}", "-", "-");
    }
    fmt::print("{:<52} {:>9.3f} {:>8.1f} {:>6.1f}% {:>8.0f} {:>6.1f}% {}\n", r.name, r.ms, tf,
               100 * tf / peak_tflops, gb, 100 * gb / peak_gbps, vs);
  }
  // Kernels that evaluate exponentials against both floors: their exps at the exp2 rate and
  // their minimum bytes at the copy rate (either alone would take that long).
  bool header = false;
  for (const Result& r : results) {
    if (r.exps <= 0) continue;
    if (!header) {
      fmt::print("\n{:<48} {:>10} {:>13} {:>14} {:>10}\n", "against the floors", "ms",
                 "exp2 floor ms", "bytes floor ms", "x floor");
      header = true;
    }
    const double exp_ms = r.exps / exp2_rate * 1e3, bytes_ms = r.bytes / (peak_gbps * 1e9) * 1e3;
    fmt::print("{:<48} {:>10.3f} {:>13.3f} {:>14.3f} {:>10.2f}\n", r.name, r.ms, exp_ms, bytes_ms,
               r.ms / std::max(exp_ms, bytes_ms));
  }
  return 0;
}
