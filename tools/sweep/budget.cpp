#include "tools/sweep/budget.h"

#include "core/check.h"
#include "core/model_config.h"

#include <cmath>

namespace sambay::sweep {

ArchScaleBase archscale_base_from(const ConfigFile& spec) {
  const std::string rule = spec.get("budget.rule", "archscale");
  if (rule != "archscale")
    fail("{}: budget.rule = '{}' is not a known budget rule (valid: archscale)", spec.source, rule);
  ArchScaleBase b;
  auto positive = [&](const char* key, double value) {
    if (!(value > 0) || !std::isfinite(value))
      fail("{}: budget.{} = {} must be positive", spec.source, key, value);
    return value;
  };
  auto in_unit = [&](const char* key, double value) {
    if (!(value >= 0 && value < 1)) fail("{}: budget.{} = {} must be in [0, 1)", spec.source, key, value);
    return value;
  };
  b.d0 = int64_t(positive("d0", double(spec.get_int("budget.d0", b.d0))));
  b.eta0 = positive("eta0", spec.get_double("budget.eta0", b.eta0));
  b.b0 = int64_t(positive("b0", double(spec.get_int("budget.b0", b.b0))));
  b.t0 = positive("t0", spec.get_double("budget.t0", b.t0));
  b.n0_mult = positive("n0_mult", spec.get_double("budget.n0_mult", b.n0_mult));
  b.hd0 = int64_t(positive("hd0", double(spec.get_int("budget.hd0", b.hd0))));
  b.warmup_tokens = spec.get_double("budget.warmup_tokens", b.warmup_tokens);
  if (!(b.warmup_tokens >= 0))
    fail("{}: budget.warmup_tokens = {} must be >= 0", spec.source, b.warmup_tokens);
  b.weight_decay = spec.get_double("budget.weight_decay", b.weight_decay);
  if (!(b.weight_decay >= 0))
    fail("{}: budget.weight_decay = {} must be >= 0", spec.source, b.weight_decay);
  b.beta1 = in_unit("beta1", spec.get_double("budget.beta1", b.beta1));
  b.beta2 = in_unit("beta2", spec.get_double("budget.beta2", b.beta2));
  b.adam_eps = positive("adam_eps", spec.get_double("budget.adam_eps", b.adam_eps));
  b.clip = spec.get_double("budget.clip", b.clip);
  if (!(b.clip >= 0)) fail("{}: budget.clip = {} must be >= 0", spec.source, b.clip);
  b.min_lr_ratio = in_unit("min_lr_ratio", spec.get_double("budget.min_lr_ratio", b.min_lr_ratio));
  return b;
}

double archscale_param_multiplier(const std::string& family, int64_t ar) {
  archscale_aspect_ratio(family);  // checks the name
  const double a = double(ar);
  if (family == "transformerpp") return 14.5 * a * a;
  if (family == "samba-yoco") return 13.5 * a * a + 208 * a;
  return 14.5 * a * a + 144 * a;  // sambay, sambay-da
}

ArchScaleRun archscale_budget(const ArchScaleBase& base, const std::string& family, int64_t ar,
                              int64_t depth, int64_t ranks, int64_t micro_batch, int64_t seq_len) {
  SAMBAY_CHECK(ranks > 0 && micro_batch > 0 && seq_len > 0 && depth > 0 && ar > 0,
               "budget: ranks {}, micro_batch {}, seq_len {}, depth {}, ar {} must be positive",
               ranks, micro_batch, seq_len, depth, ar);
  ArchScaleRun r;
  const double d = double(depth), d0 = double(base.d0);
  r.budget_params = archscale_param_multiplier(family, ar) * d * d * d;
  r.tokens = int64_t(std::floor(base.t0 * r.budget_params / (base.n0_mult * d0 * d0 * d0)));
  const int64_t per_micro_step = ranks * micro_batch * seq_len;
  r.batch_tokens = base.b0 / per_micro_step * per_micro_step;
  if (r.batch_tokens == 0)
    fail("budget: b0 = {} tokens is less than one micro-batch on every rank ({} ranks x {} x {} "
         "= {} tokens)",
         base.b0, ranks, micro_batch, seq_len, per_micro_step);
  r.grad_accum = r.batch_tokens / per_micro_step;
  r.lr = base.eta0 * std::sqrt(double(r.batch_tokens) / double(base.b0));
  const int64_t micro_batches_per_rank = r.tokens / ranks / (micro_batch * seq_len);
  r.steps = micro_batches_per_rank / r.grad_accum;
  if (r.steps == 0)
    fail("budget: depth {} gets {} tokens, less than one step of {} tokens", depth, r.tokens,
         r.batch_tokens);
  const int64_t warmup_micro = int64_t(base.warmup_tokens) / ranks / (micro_batch * seq_len);
  r.warmup_steps = warmup_micro / r.grad_accum;
  if (r.warmup_steps > r.steps)
    fail("budget: warmup_tokens = {} is {} steps, more than the {} steps of depth {}",
         base.warmup_tokens, r.warmup_steps, r.steps, depth);
  return r;
}

}  // namespace sambay::sweep
