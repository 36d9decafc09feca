// The budget rules of the SambaY paper's scaling study, as ArchScale's pretrain.py (setup, SambaY
// era) derives a run of depth D from the base hyperparameters of a depth-d0 model:
//   N(D)       = mult(family, ar) D^3, the non-embedding parameters by its formula:
//                14.5 ar^2 (Transformer++), 14.5 ar^2 + 144 ar (SambaY, SambaY+DA),
//                13.5 ar^2 + 208 ar (Samba+YOCO);
//   tokens     = floor(t0 N(D) / N0) with N0 = n0_mult d0^3 (the Transformer++'s N(d0):
//                about 100 tokens per parameter, Chinchilla-style, at every depth);
//   batch      b = floor(b0 / m) m tokens, m = ranks x micro_batch x seq_len (b0 when m divides
//                it); gradient accumulation b / m;
//   lr         eta0 sqrt(b / b0) (μP++'s sqrt(d0 / D) and d0 / D come from the model config:
//                mup_base_depth = d0, mup_base_width = ar d0);
//   steps      floor(floor(tokens / ranks) / (micro_batch x seq_len)) / accumulation;
//   warmup     warmup_tokens, linear from 0, then linear decay to min_lr_ratio (0) at the end;
//   AdamW      weight decay, betas, eps and the clip of the base.
// ArchScale evaluates its schedule per micro-batch; sambay per optimizer step (the same warmup
// tokens and the same linear decay, to within one step).
#pragma once

#include "core/config_file.h"

#include <cstdint>
#include <string>

namespace sambay::sweep {

// pretrain.py's BaseHyperparameters at the SambaY paper's release (the defaults), or a sweep
// spec's [budget] values.
struct ArchScaleBase {
  int64_t d0 = 16;
  double eta0 = 4e-4;
  int64_t b0 = int64_t(1) << 21;  // tokens per step
  double t0 = 1e11;               // tokens of the base model
  double n0_mult = 237568;        // N(d0) = n0_mult d0^3
  int64_t hd0 = 128;
  double warmup_tokens = 1e9;
  double weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8, clip = 1.0;
  double min_lr_ratio = 0;  // min_lr0 = 0
};

// The [budget] section of a spec (keys as the fields above; rule = archscale). Throws naming
// the file and key for a bad value.
ArchScaleBase archscale_base_from(const ConfigFile& spec);

// ArchScale's N(D) / D^3 for a family (core's archscale family names) of aspect ratio ar.
double archscale_param_multiplier(const std::string& family, int64_t ar);

struct ArchScaleRun {
  double budget_params = 0;  // N(D)
  int64_t tokens = 0;        // the token budget floor(t0 N / N0)
  int64_t batch_tokens = 0;  // b
  int64_t grad_accum = 0;
  double lr = 0;  // peak learning rate given to the trainer (before μP++'s multipliers)
  int64_t steps = 0, warmup_steps = 0;
};

// The run of `depth` on `ranks` data-parallel ranks with micro-batches of micro_batch x seq_len
// tokens. Throws naming what does not fit (a batch b0 smaller than one micro-batch per rank, a
// warmup longer than the run, no step at all).
ArchScaleRun archscale_budget(const ArchScaleBase& base, const std::string& family, int64_t ar,
                              int64_t depth, int64_t ranks, int64_t micro_batch, int64_t seq_len);

}  // namespace sambay::sweep
