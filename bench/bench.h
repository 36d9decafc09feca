// Kernel benchmarks: each bench/bench_<op>.cpp registers functions with SAMBAY_BENCHMARK; the
// sambay_bench executable runs all (or those matching a filter) and prints one table.
// Timing: CUDA events around the region after warm-up, median of repeats, random data.
#pragma once

#include "core/cuda_stream.h"

#include <functional>
#include <string>
#include <vector>

namespace sambay::bench {

// One result row. flops or bytes may be 0 when not meaningful.
struct Result {
  std::string name;   // e.g. "selective_scan fwd+bwd d2560 L4096"
  double ms = 0;      // median milliseconds
  double flops = 0;   // useful floating-point operations per run
  double bytes = 0;   // minimum bytes moved through HBM per run
  double exps = 0;    // exponentials the run evaluates (set against the measured exp2 rate)
  std::string anchor;  // key of the PyTorch anchor to print beside it (anchors.h), or empty
};

struct Context {
  cudaStream_t stream = nullptr;
  std::vector<Result>* results = nullptr;
  // Times fn (which must only enqueue work on `stream`): `warmup` untimed runs, then the median
  // of `repeats` runs each timed with CUDA events.
  double time_ms(const std::function<void()>& fn, int warmup = 3, int repeats = 20) const;
  void report(const Result& r) const { results->push_back(r); }
};

// ex2.approx.f32 evaluations per second on this GPU: a compute-bound kernel of independent
// exp2 chains (bench/exp2_rate.cu), the throughput limit of the special-function units.
double measure_exp2_rate(const Context& ctx);

using BenchFn = void (*)(Context&);
int register_benchmark(const char* name, BenchFn fn);

}  // namespace sambay::bench

#define SAMBAY_BENCHMARK(name, fn) \
  static const int sambay_bench_registered_##fn = ::sambay::bench::register_benchmark(name, fn)
