// Attention and differential attention, forward and backward, at the model's shapes.
// FLOPs count only the masked work: with n = visible (query, key) pairs per head (causal:
// L (L + 1) / 2; window w: sum over t of min(t + 1, w)), one attention of head dims dk, dv costs
// forward 2 n (dk + dv) per head (S = Q K^T and O = P V; 4 n dk at dv = dk) and backward
// 2 n (3 dk + 2 dv) (S recomputed, dP = dO V^T, dV = P^T dO, dK = dS^T Q, dQ = dS K).
// Differential attention is two such attentions with H/2 heads, dk = h, dv = 2h each; its
// combine/norm kernels are timed with it but add no FLOPs to the count.
#include "bench/bench.h"
#include "core/bf16.h"
#include "core/cuda_runtime.h"
#include "kernels/attention.h"
#include "kernels/diff_attention.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

namespace sambay::bench {
namespace {

double visible_pairs(int64_t L, int64_t window) {
  double n = 0;
  for (int64_t t = 0; t < L; ++t) n += window > 0 ? std::min<int64_t>(t + 1, window) : t + 1;
  return n;
}

// A device buffer of n elements: N(0, 1) values (bf16), zeros (bf16 gradients) or a constant.
template <typename T>
struct Buffer {
  T* ptr = nullptr;
  int64_t n = 0;
  explicit Buffer(int64_t count) : n(count) {
    ptr = static_cast<T*>(cuda_malloc(sizeof(T) * count, "bench buffer"));
  }
  ~Buffer() { cuda_free(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

std::unique_ptr<Buffer<bf16>> random_bf16(int64_t n, uint32_t seed) {
  std::vector<bf16> h(n);
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& x : h) x = to_bf16(dist(rng));
  auto b = std::make_unique<Buffer<bf16>>(n);
  cuda_copy_to_device(b->ptr, h.data(), sizeof(bf16) * n);
  return b;
}

std::unique_ptr<Buffer<bf16>> zeros_bf16(int64_t n) {
  auto b = std::make_unique<Buffer<bf16>>(n);
  cuda_memset_zero(b->ptr, sizeof(bf16) * n);
  return b;
}

std::unique_ptr<Buffer<float>> filled_f32(int64_t n, float value) {
  std::vector<float> h(n, value);
  auto b = std::make_unique<Buffer<float>>(n);
  cuda_copy_to_device(b->ptr, h.data(), sizeof(float) * n);
  return b;
}

void run_attention(Context& ctx, const AttentionShape& s) {
  const int64_t nq = s.B * s.L * s.H * s.dk, nk = s.B * s.L * s.G * s.dk;
  const int64_t nv = s.B * s.L * s.G * s.dv, no = s.B * s.L * s.H * s.dv;
  auto q = random_bf16(nq, 1), k = random_bf16(nk, 2), v = random_bf16(nv, 3);
  auto dout = random_bf16(no, 4), out = random_bf16(no, 5);
  auto dq = zeros_bf16(nq), dk = zeros_bf16(nk), dv = zeros_bf16(nv);
  auto lse = filled_f32(s.B * s.H * s.L, 0.f);
  const float scale = 1.f / std::sqrt(static_cast<float>(s.dk));
  const double pairs = visible_pairs(s.L, s.window) * s.B * s.H;
  const std::string shape = fmt::format("B{} L{} H{} G{} d{}/{} {}", s.B, s.L, s.H, s.G, s.dk,
                                        s.dv, s.window ? fmt::format("w{}", s.window) : "full");

  const double fwd_ms = ctx.time_ms([&] {
    attention_forward_cuda(q->ptr, k->ptr, v->ptr, nullptr, out->ptr, lse->ptr, s, scale,
                           ctx.stream);
  });
  // The anchors: cuDNN's SDPA for causal attention (k and v repeated to H heads: the same FLOPs),
  // flex_attention with a block mask for the window.
  const std::string anchor =
      s.window ? fmt::format("attention flex w{} B{} L{} H{} d{}", s.window, s.B, s.L, s.H, s.dk)
               : fmt::format("attention cudnn B{} L{} H{} d{} dv{}", s.B, s.L, s.H, s.dk, s.dv);
  ctx.report({.name = "attention fwd " + shape,
              .ms = fwd_ms,
              .flops = 2 * pairs * (s.dk + s.dv),
              .bytes = 2.0 * (nq + nk + nv + no) + 4.0 * s.B * s.H * s.L,
              .anchor = anchor + " fwd"});
  const double bwd_ms = ctx.time_ms([&] {
    attention_backward_cuda(dout->ptr, q->ptr, k->ptr, v->ptr, nullptr, out->ptr, lse->ptr,
                            dq->ptr, dk->ptr, dv->ptr, s, scale, ctx.stream);
  });
  ctx.report({.name = "attention bwd " + shape,
              .ms = bwd_ms,
              .flops = 2 * pairs * (3 * s.dk + 2 * s.dv),
              .bytes = 2.0 * (nq + nk + nv + 2 * no) + 4.0 * (nq + nk + nv) + 4.0 * s.B * s.H * s.L,
              .anchor = anchor + " bwd"});
}

void bench_attention_full(Context& ctx) {
  run_attention(ctx, {1, 4096, 16, 8, 128, 128, 0});
  run_attention(ctx, {1, 8192, 16, 8, 128, 128, 0});
}

void bench_attention_swa(Context& ctx) {
  run_attention(ctx, {1, 4096, 16, 8, 128, 128, 512});
  run_attention(ctx, {1, 8192, 16, 8, 128, 128, 512});
}

// The 3.8B model's attention layers: H 40, G 20, h 64, full (layer 17, cross-attention) and SWA.
void run_diff_attention(Context& ctx, const DiffAttentionShape& s) {
  const int64_t nq = s.B * s.L * s.H * s.h, nk = s.B * s.L * s.G * s.h;
  const DiffAttentionSavedSizes sizes = diff_attention_saved_sizes(s);
  auto q = random_bf16(nq, 11), k = random_bf16(nk, 12), v = random_bf16(nk, 13);
  auto dout = random_bf16(nq, 14), out = random_bf16(nq, 15);
  auto dq = zeros_bf16(nq), dk = zeros_bf16(nk), dv = zeros_bf16(nk);
  auto lam_vec = filled_f32(s.h, 0.05f), w = filled_f32(2 * s.h, 1.f);
  auto dlam_vec = filled_f32(4 * s.h, 0.f), dw = filled_f32(2 * s.h, 0.f);
  auto a1 = filled_f32(sizes.a1, 0.f), a2 = filled_f32(sizes.a2, 0.f);
  auto lse1 = filled_f32(sizes.lse1, 0.f), lse2 = filled_f32(sizes.lse2, 0.f);
  auto rstd = filled_f32(sizes.rstd, 0.f);
  Buffer<double> lambda(1);
  const DiffAttentionSaved saved{lambda.ptr, a1->ptr, a2->ptr, lse1->ptr, lse2->ptr, rstd->ptr};
  const float scale = 1.f / std::sqrt(static_cast<float>(s.h)), lambda_init = 0.5f;
  const float* lv = lam_vec->ptr;
  float* dl = dlam_vec->ptr;
  // Two maps of H/2 heads, dk = h, dv = 2h.
  const double pairs = 2 * visible_pairs(s.L, s.window) * s.B * (s.H / 2);
  const std::string shape = fmt::format("B{} L{} H{} G{} h{} {}", s.B, s.L, s.H, s.G, s.h,
                                        s.window ? fmt::format("w{}", s.window) : "full");

  const double fwd_ms = ctx.time_ms([&] {
    diff_attention_forward_cuda(q->ptr, k->ptr, v->ptr, nullptr, lv, lv, lv, lv, lambda_init,
                                w->ptr, out->ptr, saved, s, scale, 1e-5f, ctx.stream);
  });
  ctx.report({"diff_attention fwd " + shape, fwd_ms, 2 * pairs * (s.h + 2 * s.h),
              2.0 * (2 * nq + 2 * nk) + 4.0 * (sizes.a1 + sizes.a2)});
  const double bwd_ms = ctx.time_ms([&] {
    diff_attention_backward_cuda(dout->ptr, q->ptr, k->ptr, v->ptr, nullptr, lv, lv, lv, lv,
                                 lambda_init, w->ptr, saved, dq->ptr, dk->ptr, dv->ptr, dl,
                                 dl + s.h, dl + 2 * s.h, dl + 3 * s.h, dw->ptr, s, scale,
                                 ctx.stream);
  });
  ctx.report({"diff_attention bwd " + shape, bwd_ms, 2 * pairs * (3 * s.h + 4 * s.h),
              2.0 * (2 * nq + 2 * nk) + 4.0 * (2 * nq + 2 * nk) + 8.0 * (sizes.a1 + sizes.a2)});
  // The anchor: cuDNN's SDPA over H heads of dk h and dv 2h, the same FLOPs as the two maps
  // (causal only; the windowed layers have no such anchor).
  if (s.window == 0)
    ctx.report({.name = "diff_attention fwd+bwd " + shape,
                .ms = fwd_ms + bwd_ms,
                .flops = 2 * pairs * (3 * s.h) + 2 * pairs * (7 * s.h),
                .anchor = fmt::format("attention cudnn B{} L{} H{} d{} dv{} fwd+bwd", s.B, s.L,
                                      s.H, s.h, 2 * s.h)});
}

void bench_diff_attention(Context& ctx) {
  run_diff_attention(ctx, {1, 4096, 40, 20, 64, 0});
  run_diff_attention(ctx, {1, 4096, 40, 20, 64, 512});
  // sambay-da-1b's shape: 16 query heads of h 128 (dv 256), 8 kv heads.
  run_diff_attention(ctx, {1, 4096, 16, 8, 128, 0});
}

}  // namespace

SAMBAY_BENCHMARK("attention_full", bench_attention_full);
SAMBAY_BENCHMARK("attention_swa", bench_attention_swa);
SAMBAY_BENCHMARK("diff_attention", bench_diff_attention);

}  // namespace sambay::bench
