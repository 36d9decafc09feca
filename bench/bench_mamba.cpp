// Mamba's kernels at the 1B (E = 4096) and 3.8B (E = 5120) shapes, L = 4096, N = 16, as a
// typical Mamba layer runs them (no dy_extra: only SambaY's memory layer has one). Bytes are
// the minimum HBM traffic of the call: every input read once, every output written once, and
// gradients that are added into (+=) read and written once; the scan's
// checkpoint and the backward's workspace are not counted (they are the kernels' own overhead).
// The scan also reports the decay exponentials its kernels evaluate, which bench_main sets
// against the measured exp2 rate (targets: fwd+bwd at most 1.0 ms at B1 E5120, 1.5 ms at B2).
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "bench/bench.h"
#include "core/bf16.h"
#include "core/cuda_check.h"
#include "kernels/causal_conv1d.h"
#include "kernels/selective_scan.h"

namespace sambay::bench {
namespace {

template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(int64_t n) { SAMBAY_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * size_t(n))); }
  DeviceArray(DeviceArray&& other) noexcept : ptr(other.ptr) { other.ptr = nullptr; }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

// Uniform values in [center - spread, center + spread] from a counter hash (fast for 10^8 values).
std::vector<float> uniform(int64_t n, float center, float spread, uint64_t seed) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t h = (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xD1B54A32D192ED03ull;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    v[i] = center + spread * (float(h >> 40) / float(1 << 24) * 2.f - 1.f);
  }
  return v;
}

DeviceArray<bf16> bf16_array(int64_t n, float center, float spread, uint64_t seed) {
  const std::vector<float> f = uniform(n, center, spread, seed);
  std::vector<bf16> h(n);
  for (int64_t i = 0; i < n; ++i) h[i] = to_bf16(f[i]);
  DeviceArray<bf16> d(n);
  SAMBAY_CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), sizeof(bf16) * size_t(n), cudaMemcpyHostToDevice));
  return d;
}

DeviceArray<float> f32_array(const std::vector<float>& h) {
  DeviceArray<float> d(int64_t(h.size()));
  SAMBAY_CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice));
  return d;
}

void zero(void* p, size_t bytes) { SAMBAY_CUDA_CHECK(cudaMemset(p, 0, bytes)); }

void bench_scan(Context& ctx, int64_t B, int64_t E) {
  const int64_t L = 4096, N = 16, ble = B * L * E, bln = B * L * N;
  const SelectiveScanShape s{B, L, E, N};
  // Steps delta = softplus(dt + dt_bias) near 0.05, A_log = log(1..N), D = 1: a layer near init.
  auto x = bf16_array(ble, 0.f, 1.5f, 1), dt = bf16_array(ble, 0.f, 0.5f, 2),
       z = bf16_array(ble, 0.f, 1.5f, 3), Bc = bf16_array(bln, 0.f, 1.5f, 4),
       Cc = bf16_array(bln, 0.f, 1.5f, 5), dout = bf16_array(ble, 0.f, 1.f, 6);
  auto dt_bias = f32_array(std::vector<float>(E, std::log(std::expm1(0.05f))));
  std::vector<float> a_log(E * N);
  for (int64_t i = 0; i < E * N; ++i) a_log[i] = std::log(float(i % N + 1));
  auto A_log = f32_array(a_log), D = f32_array(std::vector<float>(E, 1.f));
  DeviceArray<bf16> out(ble), dx(ble), ddt(ble), dz(ble), dBc(bln), dCc(bln);
  DeviceArray<float> ddt_bias(E), dA_log(E * N), dD(E);
  DeviceArray<float> checkpoint(selective_scan_checkpoint_floats(s));
  DeviceArray<float> workspace(selective_scan_backward_workspace_floats(s));
  for (auto* p : {dx.ptr, ddt.ptr, dz.ptr}) zero(p, 2 * size_t(ble));
  for (auto* p : {dBc.ptr, dCc.ptr}) zero(p, 2 * size_t(bln));
  zero(ddt_bias.ptr, 4 * E), zero(dA_log.ptr, 4 * E * N), zero(dD.ptr, 4 * E);

  // As the model runs them: the forward writes y (kept for the backward) and out, the backward
  // reads y.
  DeviceArray<bf16> y(ble);
  auto forward = [&] {
    selective_scan_forward_cuda(x.ptr, dt.ptr, dt_bias.ptr, A_log.ptr, Bc.ptr, Cc.ptr, D.ptr, z.ptr,
                                nullptr, y.ptr, out.ptr, checkpoint.ptr, s, ctx.stream);
  };
  auto backward = [&] {
    selective_scan_backward_cuda(dout.ptr, nullptr, x.ptr, dt.ptr, dt_bias.ptr, A_log.ptr, Bc.ptr,
                                 Cc.ptr, D.ptr, z.ptr, y.ptr, nullptr, checkpoint.ptr, dx.ptr,
                                 ddt.ptr, ddt_bias.ptr, dA_log.ptr, dBc.ptr, dCc.ptr, dD.ptr,
                                 dz.ptr, workspace.ptr, s, ctx.stream);
  };
  // Forward: x, dt, z, Bc, Cc in, y and out out. Backward: dout, x, dt, z, y, Bc, Cc in, dx, ddt,
  // dz, dBc, dCc read and written.
  const double fwd_bytes = 2.0 * (5 * ble + 2 * bln);
  const double bwd_bytes = 2.0 * (5 * ble + 2 * bln) + 4.0 * (3 * ble + 2 * bln);
  const std::string shape = fmt::format("B{} L{} E{} N{}", B, L, E, N);
  const double fwd_exps = double(selective_scan_cuda_exp2_count(s, false));
  const double bwd_exps = double(selective_scan_cuda_exp2_count(s, true));
  forward();
  ctx.report({"scan fwd " + shape, ctx.time_ms(forward), 0, fwd_bytes, fwd_exps});
  ctx.report({"scan bwd " + shape, ctx.time_ms(backward), 0, bwd_bytes, bwd_exps});
  ctx.report({"scan fwd+bwd " + shape, ctx.time_ms([&] { forward(), backward(); }), 0,
              fwd_bytes + bwd_bytes, fwd_exps + bwd_exps});
}

void bench_conv(Context& ctx, int64_t B, int64_t C) {
  const int64_t L = 4096, K = 4, n = B * L * C;
  auto x = bf16_array(n, 0.f, 1.5f, 11), dy = bf16_array(n, 0.f, 1.f, 12);
  auto w = f32_array(uniform(C * K, 0.f, 0.5f, 13)), bias = f32_array(uniform(C, 0.f, 0.5f, 14));
  DeviceArray<bf16> y(n), dx(n);
  DeviceArray<float> dw(C * K), db(C);
  DeviceArray<float> workspace(causal_conv1d_silu_backward_workspace_floats(B, L, C, K));
  zero(dx.ptr, 2 * size_t(n)), zero(dw.ptr, 4 * C * K), zero(db.ptr, 4 * C);
  const std::string shape = fmt::format("B{} L{} C{} K{}", B, L, C, K);
  ctx.report({"conv1d+silu fwd " + shape, ctx.time_ms([&] {
                causal_conv1d_silu_forward_cuda(x.ptr, w.ptr, bias.ptr, nullptr, y.ptr, B, L, C, K,
                                                ctx.stream);
              }),
              0, 2.0 * 2 * n});
  ctx.report({"conv1d+silu bwd " + shape, ctx.time_ms([&] {
                causal_conv1d_silu_backward_cuda(dy.ptr, x.ptr, w.ptr, bias.ptr, nullptr, dx.ptr,
                                                 dw.ptr, db.ptr, workspace.ptr, B, L, C, K,
                                                 ctx.stream);
              }),
              0, 2.0 * 4 * n});
}

void scan_1b(Context& ctx) {
  for (int64_t B : {1, 2}) bench_scan(ctx, B, 4096);
}
void scan_3_8b(Context& ctx) {
  for (int64_t B : {1, 2}) bench_scan(ctx, B, 5120);
}
void conv_1b(Context& ctx) {
  for (int64_t B : {1, 2}) bench_conv(ctx, B, 4096);
}
void conv_3_8b(Context& ctx) {
  for (int64_t B : {1, 2}) bench_conv(ctx, B, 5120);
}

// Filters: "mamba" runs all four, "scan" or "conv" one kernel at both sizes.
SAMBAY_BENCHMARK("mamba scan 1B", scan_1b);
SAMBAY_BENCHMARK("mamba scan 3.8B", scan_3_8b);
SAMBAY_BENCHMARK("mamba conv 1B", conv_1b);
SAMBAY_BENCHMARK("mamba conv 3.8B", conv_3_8b);

}  // namespace
}  // namespace sambay::bench
