// Benchmarks of the dense CUDA ops at the shapes of the 1B (d 2048, F 8192, E 4096) and 3.8B
// (d 2560, F 10240, E 5120, V 200064) models, with n = B L = 8192 tokens (B 2, L 4096).
// FLOPs count the useful multiply-adds (2 per multiply-add); bytes count each input read once and
// each output written once (an accumulated output is read and written).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>

#include "bench/bench.h"
#include "core/bf16.h"
#include "core/cuda_check.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/gmu.h"
#include "kernels/layernorm.h"
#include "kernels/rmsnorm.h"
#include "kernels/activations.h"
#include "kernels/rope.h"
#include "optim/adamw.h"
#include "optim/clip.h"

namespace sambay::bench {
namespace {

constexpr int64_t kTokens = 8192;  // B 2 x L 4096

// A device array filled with a random pattern: 4M host values drawn once, tiled over the array
// (enough variety for timing; generating billions of values on the host would take minutes).
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  int64_t n = 0;
  DeviceArray(int64_t count, double scale = 1.0, bool positive = false, uint64_t seed = 1) : n(count) {
    SAMBAY_CUDA_CHECK(cudaMalloc(&ptr, sizeof(T) * std::max<int64_t>(count, 1)));
    const int64_t pattern = std::min<int64_t>(count, int64_t(1) << 22);
    std::vector<T> host(pattern);
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, scale);
    for (T& v : host) {
      const double x = positive ? std::abs(normal(rng)) : normal(rng);
      if constexpr (std::is_same_v<T, bf16>)
        v = to_bf16(float(x));
      else
        v = T(x);
    }
    for (int64_t at = 0; at < count; at += pattern)
      SAMBAY_CUDA_CHECK(cudaMemcpy(ptr + at, host.data(), sizeof(T) * std::min(pattern, count - at),
                                   cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

// ---- GEMMs: a linear layer's forward, dx and dW products.
void bench_linear_gemms(Context& ctx, const char* model, int64_t in, int64_t out) {
  const int64_t n = kTokens;
  DeviceArray<bf16> x(n * in), w(out * in, 0.02), y(n * out), dy(n * out), dx(n * in);
  DeviceArray<float> dw(out * in, 0.01);
  const double flops = 2.0 * n * in * out;
  auto label = [&](const char* what, const char* shape) {
    return fmt::format("gemm {} {} {}", model, what, shape);
  };
  double ms = ctx.time_ms([&] {
    gemm_bf16_cuda(false, true, n, out, in, 1.0f, x.ptr, in, w.ptr, in, 0.0f, y.ptr, out, nullptr,
                   ctx.stream);
  });
  ctx.report({label("fwd", fmt::format("[{}x{}]x[{}x{}]", n, in, in, out).c_str()), ms, flops,
              2.0 * (n * in + out * in + n * out)});
  ms = ctx.time_ms([&] {
    gemm_bf16_cuda(false, false, n, in, out, 1.0f, dy.ptr, out, w.ptr, in, 1.0f, dx.ptr, in,
                   nullptr, ctx.stream);
  });
  ctx.report({label("dx+=", fmt::format("[{}x{}]x[{}x{}]", n, out, out, in).c_str()), ms, flops,
              2.0 * (n * out + out * in + 2 * n * in)});
  ms = ctx.time_ms([&] {
    gemm_bf16_cuda(true, false, out, in, n, 1.0f, dy.ptr, out, x.ptr, in, 1.0f, dw.ptr, in,
                   nullptr, ctx.stream);
  });
  ctx.report({label("dW+=", fmt::format("[{}x{}]x[{}x{}] f32", out, n, n, in).c_str()), ms, flops,
              2.0 * (n * out + n * in) + 8.0 * out * in});
}

void bench_gemm_3_8b(Context& ctx) {
  bench_linear_gemms(ctx, "3.8B", 2560, 10240);   // the shape
  bench_linear_gemms(ctx, "3.8B", 2560, 20480);   // fc1 (gate and value)
  bench_linear_gemms(ctx, "3.8B", 10240, 2560);   // fc2
}
void bench_gemm_1b(Context& ctx) {
  bench_linear_gemms(ctx, "1B", 2048, 16384);  // fc1
  bench_linear_gemms(ctx, "1B", 8192, 2048);   // fc2
}

// ---- Norms at [8192, d].
void bench_norms(Context& ctx) {
  for (int64_t d : {int64_t{2048}, int64_t{2560}}) {
    const int64_t rows = kTokens;
    DeviceArray<bf16> x(rows * d), delta(rows * d), x_out(rows * d), y(rows * d), dy(rows * d),
        dx(rows * d);
    DeviceArray<float> w(d, 0.1), b(d, 0.1), mean(rows), rstd(rows), dw(d), db(d);
    const double act = 2.0 * rows * d;  // bytes of one bf16 activation tensor
    double ms = ctx.time_ms([&] {
      layernorm_forward_cuda(x.ptr, w.ptr, b.ptr, y.ptr, mean.ptr, rstd.ptr, rows, d, 1e-5f,
                             ctx.stream);
    });
    ctx.report({fmt::format("layernorm fwd [{}x{}]", rows, d), ms, 8.0 * rows * d, 2 * act});
    ms = ctx.time_ms([&] {
      layernorm_residual_forward_cuda(x.ptr, delta.ptr, 0.1f, x_out.ptr, w.ptr, b.ptr, y.ptr,
                                      mean.ptr, rstd.ptr, rows, d, 1e-5f, ctx.stream);
    });
    ctx.report({fmt::format("layernorm+residual fwd [{}x{}]", rows, d), ms, 10.0 * rows * d,
                4 * act});
    ms = ctx.time_ms([&] {
      layernorm_backward_cuda(dy.ptr, x.ptr, w.ptr, mean.ptr, rstd.ptr, dx.ptr, dw.ptr, db.ptr,
                              rows, d, ctx.stream);
    });
    ctx.report({fmt::format("layernorm bwd [{}x{}]", rows, d), ms, 14.0 * rows * d, 4 * act});
    ms = ctx.time_ms([&] {
      rmsnorm_forward_cuda(x.ptr, w.ptr, y.ptr, rstd.ptr, rows, d, 1e-5f, ctx.stream);
    });
    ctx.report({fmt::format("rmsnorm fwd [{}x{}]", rows, d), ms, 4.0 * rows * d, 2 * act});
    ms = ctx.time_ms([&] {
      rmsnorm_backward_cuda(dy.ptr, x.ptr, w.ptr, rstd.ptr, dx.ptr, dw.ptr, rows, d, ctx.stream);
    });
    ctx.report({fmt::format("rmsnorm bwd [{}x{}]", rows, d), ms, 10.0 * rows * d, 4 * act});
  }
}

// ---- Elementwise: SwiGLU at F, GMU/nGMU at E, RoPE, embedding.
void bench_elementwise(Context& ctx) {
  {
    const int64_t rows = kTokens, F = 10240;
    DeviceArray<bf16> h(rows * 2 * F), out(rows * F), dout(rows * F), dh(rows * 2 * F);
    const double unit = 2.0 * rows * F;
    double ms = ctx.time_ms([&] { swiglu_forward_cuda(h.ptr, out.ptr, rows, F, ctx.stream); });
    ctx.report({fmt::format("swiglu fwd [{}x{}]", rows, F), ms, 0, 3 * unit});
    ms = ctx.time_ms(
        [&] { swiglu_backward_cuda(dout.ptr, h.ptr, dh.ptr, rows, F, ctx.stream); });
    ctx.report({fmt::format("swiglu bwd [{}x{}]", rows, F), ms, 0, 7 * unit});
  }
  {
    const int64_t rows = kTokens, E = 5120;
    DeviceArray<bf16> m(rows * E), g(rows * E), out(rows * E), dout(rows * E), dm(rows * E),
        dg(rows * E);
    DeviceArray<float> w(E, 0.1), rstd(rows), dw(E);
    const double unit = 2.0 * rows * E;
    double ms = ctx.time_ms([&] {
      gmu_forward_cuda(m.ptr, g.ptr, nullptr, out.ptr, nullptr, rows, E, 1e-5f, ctx.stream);
    });
    ctx.report({fmt::format("gmu fwd [{}x{}]", rows, E), ms, 0, 3 * unit});
    ms = ctx.time_ms([&] {
      gmu_backward_cuda(dout.ptr, m.ptr, g.ptr, nullptr, nullptr, dm.ptr, dg.ptr, nullptr, rows, E,
                        ctx.stream);
    });
    ctx.report({fmt::format("gmu bwd [{}x{}]", rows, E), ms, 0, 7 * unit});
    ms = ctx.time_ms([&] {
      gmu_forward_cuda(m.ptr, g.ptr, w.ptr, out.ptr, rstd.ptr, rows, E, 1e-5f, ctx.stream);
    });
    ctx.report({fmt::format("ngmu fwd [{}x{}]", rows, E), ms, 0, 3 * unit});
    ms = ctx.time_ms([&] {
      gmu_backward_cuda(dout.ptr, m.ptr, g.ptr, w.ptr, rstd.ptr, dm.ptr, dg.ptr, dw.ptr, rows, E,
                        ctx.stream);
    });
    ctx.report({fmt::format("ngmu bwd [{}x{}]", rows, E), ms, 0, 7 * unit});
  }
  {
    const int64_t B = 2, L = 4096, heads = 16, hd = 128;
    const int64_t numel = B * L * heads * hd;
    DeviceArray<bf16> x(numel), y(numel), dx(numel);
    double ms = ctx.time_ms(
        [&] { rope_forward_cuda(x.ptr, y.ptr, B, L, heads, hd, 10000.0, ctx.stream); });
    ctx.report({fmt::format("rope fwd B{} L{} H{} h{}", B, L, heads, hd), ms, 0, 4.0 * numel});
    ms = ctx.time_ms(
        [&] { rope_backward_cuda(y.ptr, dx.ptr, B, L, heads, hd, 10000.0, ctx.stream); });
    ctx.report({fmt::format("rope bwd B{} L{} H{} h{}", B, L, heads, hd), ms, 0, 6.0 * numel});
  }
  {
    const int64_t n = kTokens, vocab = 200064, d = 2560;
    std::vector<int32_t> host_tokens(n);
    std::mt19937 rng(7);
    for (int32_t& t : host_tokens) t = int32_t(rng() % vocab);
    int32_t* tokens = nullptr;
    SAMBAY_CUDA_CHECK(cudaMalloc(&tokens, sizeof(int32_t) * n));
    SAMBAY_CUDA_CHECK(
        cudaMemcpy(tokens, host_tokens.data(), sizeof(int32_t) * n, cudaMemcpyHostToDevice));
    DeviceArray<bf16> table(vocab * d, 0.02), out(n * d), dout(n * d);
    DeviceArray<float> dtable(vocab * d, 0.001);
    double ms = ctx.time_ms([&] {
      embedding_forward_cuda(tokens, table.ptr, out.ptr, n, vocab, d, ctx.stream);
    });
    ctx.report({fmt::format("embedding fwd n{} d{}", n, d), ms, 0, 4.0 * n * d});
    ms = ctx.time_ms([&] {
      embedding_backward_cuda(tokens, dout.ptr, dtable.ptr, n, vocab, d, ctx.stream);
    });
    ctx.report({fmt::format("embedding bwd n{} d{}", n, d), ms, 0, 2.0 * n * d + 8.0 * n * d});
    cudaFree(tokens);
  }
}

// ---- Cross-entropy through the tied head, n 8192, V 200064, d 2560 (phi4-mini-flash's head),
// in vocabulary chunks of c rows, all kept from forward to backward or all recomputed.
// FLOPs count the three GEMMs (2 n V d each: logits, dh, dw), the target's denominator; with no
// chunk kept the backward also recomputes the logits (a fourth GEMM, not counted). Bytes: the
// operands once, the bf16 logits written and read by the passes (kernels/cross_entropy.h).
// "3 GEMMs alone" runs the same GEMMs per chunk without the passes: the ceiling of this shape.
void bench_cross_entropy(Context& ctx) {
  const int64_t n = kTokens, V = 200064, d = 2560;
  std::vector<int32_t> host_targets(n);
  std::mt19937 rng(11);
  for (int32_t& t : host_targets) t = int32_t(rng() % V);
  int32_t* targets = nullptr;
  SAMBAY_CUDA_CHECK(cudaMalloc(&targets, sizeof(int32_t) * n));
  SAMBAY_CUDA_CHECK(
      cudaMemcpy(targets, host_targets.data(), sizeof(int32_t) * n, cudaMemcpyHostToDevice));
  DeviceArray<bf16> h(n * d), emb(V * d, 0.02), dh(n * d);
  DeviceArray<float> lse(n), demb(V * d, 0.001);
  const double gemm = 2.0 * n * V * d;
  const double operands = 2.0 * (n * d + V * d), dw_bytes = 8.0 * V * d, dh_bytes = 4.0 * n * d;
  auto run = [&](int64_t chunk, bool keep_all) {
    CrossEntropyPlan plan{n, d, V, chunk, 0};
    const int64_t chunks = cross_entropy_chunks(plan);
    plan.kept_chunks = keep_all ? chunks : 0;
    void* workspace = nullptr;
    SAMBAY_CUDA_CHECK(cudaMalloc(&workspace, cross_entropy_workspace(plan).bytes));
    const std::string what = fmt::format("c{} {}", chunk, keep_all ? "kept" : "recomputed");
    auto forward = [&] {
      tied_cross_entropy_forward_cuda(h.ptr, emb.ptr, targets, lse.ptr, plan, 1.0f, workspace,
                                      nullptr, ctx.stream);
    };
    auto backward = [&] {
      tied_cross_entropy_backward_cuda(h.ptr, emb.ptr, targets, lse.ptr, dh.ptr, demb.ptr, plan,
                                       1.0f, 1.0f / n, workspace, ctx.stream);
    };
    // The backward consumes the kept logits: each timed backward follows its own forward, and
    // the backward's time is the pair's less the forward's.
    const double fwd = ctx.time_ms(forward, 2, 5);
    const double both = ctx.time_ms([&] { forward(), backward(); }, 2, 5);
    const double logits_bytes = 2.0 * n * V;
    // The anchor: the plain PyTorch head + cross-entropy (fp32 logits) at this shape.
    const std::string anchor = fmt::format("ce n{} V{} d{}", n, V, d);
    ctx.report({.name = "xent fwd " + what,
                .ms = fwd,
                .flops = gemm,
                .bytes = operands + 2 * logits_bytes,
                .anchor = anchor + " fwd"});
    ctx.report({.name = "xent bwd " + what,
                .ms = both - fwd,
                .flops = 2 * gemm,
                .bytes = operands + (keep_all ? 2 : 3) * logits_bytes + dw_bytes + 3 * dh_bytes,
                .anchor = anchor + " bwd"});
    ctx.report({.name = "xent fwd+bwd " + what,
                .ms = both,
                .flops = 3 * gemm,
                .bytes = operands + (keep_all ? 4 : 5) * logits_bytes + dw_bytes + 3 * dh_bytes,
                .anchor = anchor + " fwd+bwd"});
    cudaFree(workspace);
  };
  run(8192, true);
  run(8192, false);
  run(16384, true);
  run(32768, true);

  // The same GEMMs per chunk of 8192, without the passes between them.
  const int64_t chunk = 8192;
  DeviceArray<bf16> logits(n * chunk);
  DeviceArray<float> dh_f32(n * d);
  const double ms = ctx.time_ms(
      [&] {
        for (int64_t first = 0; first < V; first += chunk) {
          const int64_t cols = std::min(chunk, V - first);
          gemm_bf16_cuda(false, true, n, cols, d, 1.0f, h.ptr, d, emb.ptr + first * d, d, 0.0f,
                         logits.ptr, chunk, nullptr, ctx.stream);
          gemm_bf16_cuda(false, false, n, d, cols, 1.0f, logits.ptr, chunk, emb.ptr + first * d,
                         d, first == 0 ? 0.0f : 1.0f, dh_f32.ptr, d, nullptr, ctx.stream);
          gemm_bf16_cuda(true, false, cols, d, n, 1.0f, logits.ptr, chunk, h.ptr, d, 1.0f,
                         demb.ptr + first * d, d, nullptr, ctx.stream);
        }
      },
      2, 5);
  ctx.report({fmt::format("xent 3 GEMMs alone c{}", chunk), ms, 3 * gemm, 0});
  cudaFree(targets);
}

// ---- AdamW over as many of 1.5e9 parameters as fit, and the gradient norm.
void bench_optimizer(Context& ctx) {
  size_t free_bytes = 0, total_bytes = 0;
  SAMBAY_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t fit = int64_t(0.8 * double(free_bytes) / 18.0);  // 4 fp32 + 1 bf16 per parameter
  const int64_t n = std::min<int64_t>(int64_t(1500) * 1000 * 1000, fit);
  DeviceArray<float> p(n), g(n, 0.01), m(n, 0.001), v(n, 1e-4, true);
  DeviceArray<bf16> p16(n);
  // 400 groups, as in a model of ~ 50 layers with 8 parameters each; alternating lr and decay.
  const int num_groups = 400;
  std::vector<AdamWGroup> host_groups;
  for (int i = 0; i < num_groups; ++i) {
    const int64_t begin = n * i / num_groups, end = n * (i + 1) / num_groups;
    host_groups.push_back({begin, end - begin, i % 2 ? 3e-4f : 1e-3f, i % 2 ? 0.1f : 0.0f});
  }
  AdamWGroup* groups = nullptr;
  SAMBAY_CUDA_CHECK(cudaMalloc(&groups, sizeof(AdamWGroup) * num_groups));
  SAMBAY_CUDA_CHECK(cudaMemcpy(groups, host_groups.data(), sizeof(AdamWGroup) * num_groups,
                               cudaMemcpyHostToDevice));
  int64_t step = 1;
  double ms = ctx.time_ms([&] {
    adamw_update_cuda(p.ptr, g.ptr, m.ptr, v.ptr, p16.ptr, n, groups, num_groups, 0.9, 0.95, 1e-8,
                      step++, 1.f, ctx.stream);
  });
  ctx.report({fmt::format("adamw {:.2f}e9 params, {} groups", n / 1e9, num_groups), ms, 15.0 * n,
              30.0 * n});
  ms = ctx.time_ms([&] { global_grad_norm_cuda(g.ptr, n, ctx.stream); });
  ctx.report({fmt::format("grad norm {:.2f}e9", n / 1e9), ms, 2.0 * n, 4.0 * n});
  cudaFree(groups);
}

}  // namespace

SAMBAY_BENCHMARK("dense/gemm 3.8B", bench_gemm_3_8b);
SAMBAY_BENCHMARK("dense/gemm 1B", bench_gemm_1b);
SAMBAY_BENCHMARK("dense/norms", bench_norms);
SAMBAY_BENCHMARK("dense/elementwise", bench_elementwise);
SAMBAY_BENCHMARK("dense/cross_entropy", bench_cross_entropy);
SAMBAY_BENCHMARK("dense/optimizer", bench_optimizer);

}  // namespace sambay::bench
