// Whole training steps on one GPU: forward, backward, gradient norm and the AdamW update of the
// 1B and 3.8B configs at sequence length 4096 (and 8192), reporting tokens/s, MFU and memory.
// A config that does not fit reports how much memory it lacks instead of failing.
#include "bench/bench.h"
#include "core/cuda_runtime.h"
#include "core/gpu_model.h"
#include "core/gpu_profile.h"
#include "core/philox.h"
#include "optim/adamw.h"
#include "optim/clip.h"
#include "optim/mup.h"

#include <fmt/format.h>

namespace sambay::bench {
namespace {

constexpr double kH100DenseBf16Tflops = 989.4;  // datasheet, SXM, dense

// anchor: the PyTorch anchor's key for the same model and batch (anchors.h), or empty.
void bench_training_step(Context& ctx, const std::string& preset, int64_t B, int64_t L,
                         RecomputeMode recompute, const std::string& anchor = "") {
  const ModelConfig c = model_preset(preset);
  const std::string name =
      fmt::format("step {} B{} L{} rc-{}", preset, B, L, recompute_mode_name(recompute));
  const int64_t params = parameter_count(c);
  const double state_bytes = params * (4.0 * 4 + 2);  // fp32 params, grads, m, v + bf16 copy
  if (state_bytes > 0.97 * double(cuda_memory_total() - cuda_memory_used())) {
    fmt::print("{}: does not fit: the state alone needs {:.2f} GiB\n", name,
               state_bytes / 1073741824.0);
    return;
  }
  Model<float> cpu = make_model<float>(c, 1);
  cpu.grads = {};  // the CPU copy only seeds the GPU parameters
  GpuModel gpu = make_gpu_model(cpu, ctx.stream);
  cpu.params = {};
  // The activations' plan as `sambay train` makes it: the free memory next to the state, less
  // the headroom.
  const int64_t total = static_cast<int64_t>(cuda_memory_total());
  const int64_t budget = total - static_cast<int64_t>(cuda_memory_used()) -
                         gpu_recompute_headroom(total);
  const RecomputeChoice choice =
      resolve_recompute(recompute, c, B, L, budget, [&](const RecomputePlan& plan) {
        return planned_gpu_activation_bytes(gpu, B, L, plan);
      });
  fmt::print("{}: recompute {}, {:.2f} GiB for activations\n{}\n", name,
             recompute_mode_name(recompute), budget / 1073741824.0, choice.log);
  if (!choice.fits) {
    fmt::print("{}: does not fit: activations {:.2f} GiB, {:.2f} GiB short\n", name,
               choice.bytes / 1073741824.0, (choice.bytes - budget) / 1073741824.0);
    return;
  }
  const double act_bytes = double(choice.bytes);
  GpuActivations acts = plan_gpu_activations(gpu, B, L, choice.plan);
  std::vector<int32_t> tokens(B * L), targets(B * L), doc(B * L, 0);
  for (int64_t i = 0; i < B * L; ++i) {
    tokens[i] = static_cast<int32_t>(philox_below(3, 0, i, c.vocab));
    targets[i] = static_cast<int32_t>(philox_below(3, 1, i, c.vocab));
  }
  upload_batch(gpu, acts, tokens.data(), targets.data(), doc.data());
  std::vector<AdamWGroup> groups;
  const MupConfig mup = mup_config_for(c);
  for (const ParamSpec& p : gpu.layout.params)
    groups.push_back({p.offset, p.numel, static_cast<float>(3e-4 * mup_lr_multiplier(p.cls, mup)),
                      static_cast<float>(0.1 * mup_weight_decay_multiplier(p.cls, mup))});
  AdamWGroup* groups_device = static_cast<AdamWGroup*>(
      cuda_malloc(sizeof(AdamWGroup) * groups.size(), "AdamW groups"));
  cuda_copy_to_device(groups_device, groups.data(), sizeof(AdamWGroup) * groups.size());
  int64_t step = 0;
  auto one_step = [&] {
    begin_op(gpu.profile, OpFamily::optimizer);
    cuda_memset_zero_async(gpu.grads, sizeof(float) * gpu.layout.total, ctx.stream);
    end_op(gpu.profile);
    ForwardResult r = gpu_model_forward(gpu, acts, false);
    gpu_model_backward(gpu, acts, false, 1.0f / r.valid_rows);
    OpScope optimizer(gpu.profile, OpFamily::optimizer);
    const double norm = global_grad_norm_cuda(gpu.grads, gpu.layout.total, ctx.stream);
    adamw_update_cuda(gpu.params, gpu.grads, gpu.adam_m, gpu.adam_v, gpu.params_bf16,
                      gpu.layout.total, groups_device, static_cast<int>(groups.size()), 0.9, 0.95,
                      1e-8, ++step, norm > 1.0 ? float(1.0 / norm) : 1.f, ctx.stream);
  };
  const double ms = ctx.time_ms(one_step, 2, 5);
  // The time split by op family, from separate profiled steps (events around each family).
  GpuProfile profile;
  profile.stream = ctx.stream;
  gpu.profile = &profile;
  constexpr int kProfiledSteps = 3;
  for (int i = 0; i < kProfiledSteps; ++i) {
    one_step();
    collect_profile(&profile);
  }
  gpu.profile = nullptr;
  destroy_profile(&profile);
  double profiled = 0;
  for (double v : profile.ms) profiled += v / kProfiledSteps;
  std::string split;
  for (size_t f = 0; f < profile.ms.size(); ++f) {
    const double v = profile.ms[f] / kProfiledSteps;
    if (v > 0)
      split += fmt::format("    {:<20} {:8.2f} ms {:5.1f}%\n", op_family_name(OpFamily(f)), v,
                           100 * v / profiled);
  }
  const double tokens_per_s = B * L / (ms * 1e-3);
  const double flops = training_flops_per_token(c, L) * B * L;
  fmt::print("{}: {:.1f} ms/step, {:.0f} tokens/s, {:.0f} TFLOP/s, MFU {:.1f}% of the {:.0f} "
             "TFLOP/s datasheet peak; memory {:.2f} GiB (state {:.2f}, activations {:.2f})\n",
             name, ms, tokens_per_s, flops / (ms * 1e-3) / 1e12,
             100 * flops / (ms * 1e-3) / (kH100DenseBf16Tflops * 1e12), kH100DenseBf16Tflops,
             cuda_memory_used() / 1073741824.0, state_bytes / 1073741824.0,
             act_bytes / 1073741824.0);
  fmt::print("  time split by op family (sum {:.1f} ms per step; gaps between families are the "
             "rest):\n{}",
             profiled, split);
  ctx.report({.name = name, .ms = ms, .flops = flops, .anchor = anchor});
  cuda_free(groups_device);
}

// The 150-line PyTorch Transformer++ of the anchor script has these shapes (torch.compile, cuDNN
// attention, fused AdamW): the whole step beside it.
void step_transformerpp(Context& ctx) {
  for (int64_t B : {1, 2, 4})
    bench_training_step(ctx, "transformerpp-1b", B, 4096, RecomputeMode::none,
                        fmt::format("tpp B{} L4096 step", B));
}

void step_1b(Context& ctx) {
  for (int64_t B : {1, 2, 4})
    bench_training_step(ctx, "sambay-da-1b", B, 4096, RecomputeMode::none);
  bench_training_step(ctx, "sambay-da-1b", 1, 8192, RecomputeMode::none);
}
// auto: the plan `sambay train` chooses on this GPU (none for B1 x 8192 on a 141 GB H200); all:
// the old full recompute, for comparison.
void step_3_8b(Context& ctx) {
  bench_training_step(ctx, "phi4-mini-flash", 1, 4096, RecomputeMode::auto_choice);
  bench_training_step(ctx, "phi4-mini-flash", 1, 8192, RecomputeMode::auto_choice);
  bench_training_step(ctx, "phi4-mini-flash", 2, 8192, RecomputeMode::auto_choice);
  bench_training_step(ctx, "phi4-mini-flash", 1, 8192, RecomputeMode::all);
}

SAMBAY_BENCHMARK("step_1b", step_1b);
SAMBAY_BENCHMARK("step_transformerpp", step_transformerpp);
SAMBAY_BENCHMARK("step_3.8b", step_3_8b);

}  // namespace
}  // namespace sambay::bench
