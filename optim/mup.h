// μP++ (the SambaY paper's parameterisation: μP for width plus Depth-μP), as multipliers that the
// model and the optimizer apply, so that hyperparameters tuned on a small base model transfer.
//
// With enabled = true (r = base_width / width, D = depth = number of blocks):
//   learning rate   hidden matrices: r * sqrt(base_depth / depth); embedding and vector-like
//                   parameters: sqrt(base_depth / depth)  (the sqrt factor is 1 when
//                   base_depth = 0, i.e. no depth transfer);
//   weight decay    hidden matrices keep it; embedding and vector-like parameters get none;
//   init std        hidden matrices: base_std * sqrt(base_width / fan_in) (variance ∝ 1/fan_in,
//                   equal to base_std for a base-width fan-in); embedding and vectors: base_std;
//   output logits   multiplied by r (the final norm's output is scaled before the tied head);
//   residual        every mixer and MLP output is multiplied by 1 / sqrt(2 D) before it is added
//                   to the residual stream (two residual branches per block).
// With enabled = false everything is the standard parameterisation: multipliers 1, init std
// base_std, logit and residual scales 1.
//
// Sources (facts only), checked in microsoft/ArchScale (the paper's training code):
// - pretrain.py, μP++ (train names with "mup"): parameters whose names contain conv1d, wte,
//   lm_head, norm or ln, and every parameter that is not a "weight" (biases, A_log, D, ...), form
//   one group with lr multiplier 1 and weight decay 0; all other weights get lr multiplier
//   d0 / depth and the usual weight decay. The base learning rate itself is multiplied by
//   sqrt(d0 / depth) (Depth-μP). Base depth d0 = 8.
// - lit_gpt/config.py: width = aspect_ratio * depth in the scaling runs, so their d0 / depth is
//   exactly the width ratio base_width / width used here.
// - lit_gpt/model.py: logits scale d0 / n_layer applied to the final norm's output; each block's
//   mixer and MLP outputs are divided by sqrt(2 * n_layer) before the residual add (n_layer =
//   number of blocks); the tied embedding is initialised N(0, 0.02) at every width; hidden Linear
//   weights use PyTorch's default uniform init, std 1 / sqrt(3 fan_in) — the same 1/sqrt(fan_in)
//   law as here (base_std = 1 / sqrt(3 base_width) reproduces it exactly).
// - The SambaY paper (arXiv 2507.06607), training recipe as summarised in shared/model.md.
#pragma once

#include "core/param_layout.h"  // ParamClass

#include <cstdint>

namespace sambay {

struct MupConfig {
  bool enabled;
  int64_t base_width;      // width of the model the hyperparameters were tuned on
  int64_t width;           // model width d
  int64_t depth;           // number of blocks (each with a mixer and an MLP)
  int64_t base_depth = 0;  // depth of the tuned base model; 0: no depth transfer of the lr
};

// muP++ settings of a model config: enabled when mup_base_width > 0; depth = number of layers.
MupConfig mup_config_for(const ModelConfig& model);

double mup_lr_multiplier(ParamClass cls, const MupConfig& config);
double mup_weight_decay_multiplier(ParamClass cls, const MupConfig& config);
double mup_init_std(ParamClass cls, int64_t fan_in, const MupConfig& config, double base_std);
double mup_logit_scale(const MupConfig& config);
double mup_residual_scale(const MupConfig& config);

}  // namespace sambay
