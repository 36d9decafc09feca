// μP++ (the SambaY paper's parameterisation: μP for width plus Depth-μP), as multipliers that the
// model and the optimizer apply, so that hyperparameters tuned on a small base model transfer;
// and the initialisation rules of the model's parameters.
//
// With enabled = true (r = base_width / width, D = depth = number of blocks, d0 = base_depth):
//   learning rate   hidden matrices: r * sqrt(d0 / D); embedding, readout and vector-like
//                   parameters: sqrt(d0 / D)  (the sqrt factor is 1 when d0 = 0: no depth rule);
//   weight decay    hidden matrices keep it; embedding, readout and vector-like parameters get
//                   none;
//   output logits   multiplied by r (the final norm's output is scaled before the head);
//   residual        every mixer and MLP output is multiplied by 1 / sqrt(2 D) before it is added
//                   to the residual stream (two residual branches per block);
//   attention       scores scaled by sqrt(base_head_dim) / head_dim (1 / sqrt(head_dim) when
//                   base_head_dim = 0, and always without μP++).
// With enabled = false everything is the standard parameterisation: multipliers 1 (every
// parameter decayed), logit and residual scales 1.
//
// Initialisation (apply_init_rules; w0 = ModelConfig::init_multiplier, L = number of blocks):
//   init = normal     projections N(0, (0.02 w0)^2), under μP++ std 0.02 w0 sqrt(base_width /
//                     fan_in); embedding and an untied readout N(0, 0.02^2). sambay's own rule.
//   init = archscale  ArchScale's: projections U(-w0 / sqrt(fan_in), w0 / sqrt(fan_in)) under
//                     μP++ (PyTorch's Linear default; Mamba's dt_proj rule is the same bound,
//                     fan_in = dt rank) and N(0, (0.02 w0)^2) without; output projections (mixer
//                     out_proj, MLP fc2) then divided by sqrt(2 L), except under μP++ with an
//                     untied head; embedding N(0, 0.02^2) when tied, N(0, 1e-8) (std 1e-4) when
//                     untied; an untied readout zero under μP++, N(0, (0.02 w0)^2) without.
// Both keep Mamba's conv (PyTorch's Conv1d default), dt bias, A_log and D, the norms (ones,
// zeros) and differential attention's lambda vectors (N(0, 0.1^2)).
//
// Sources (facts only), microsoft/ArchScale at the SambaY paper's release (July-December 2025):
// - pretrain.py: BaseHyperparameters d0 = 16, eta0 = 4e-4, b0 = 2^21 tokens, t0 = 1e11 tokens,
//   hd0 = 128, w_init0 = 1. With "mup" in the run name: lr = eta0 sqrt(b / b0) sqrt(d0 / depth)
//   for every group; parameters whose names contain conv1d, wte, lm_head, norm, ln or layernorm,
//   and every parameter that is not a "weight" (biases, A_log, D, lambdas), form one group with
//   lr multiplier 1 and weight decay 0; all other weights get lr multiplier d0 / depth and the
//   weight decay. Without "mup" every parameter is decayed at lr multiplier 1. "_tie" ties the
//   head.
// - lit_gpt/model.py: logits scale mup_d0 / n_layer on the final norm's output; each block's
//   mixer and MLP outputs divided by sqrt(2 n_layer) under μP++; attention softmax scale
//   1 / sqrt(hs) times sqrt(mup_hd0) / sqrt(hs); _init_weights as in the init rule above.
// - lit_gpt/config.py: width = ar * depth in the scaling families, so d0 / depth is exactly the
//   width ratio base_width / width used here when base_width = ar d0.
// (A later ArchScale release changed the base to d0 = 8, eta0 = 6e-4, t0 = 9.5e9 and other rules;
// sambay follows the SambaY-era code. Its base numbers can be set in a sweep's [budget].)
#pragma once

#include "core/param_layout.h"  // ParamClass

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

struct MupConfig {
  bool enabled;
  int64_t base_width;         // width of the model the hyperparameters were tuned on
  int64_t width;              // model width d
  int64_t depth;              // number of blocks (each with a mixer and an MLP)
  int64_t base_depth = 0;     // depth of the tuned base model; 0: no depth transfer of the lr
  int64_t base_head_dim = 0;  // head dim of the tuned base model; 0: 1 / sqrt(head_dim) scores
};

// muP++ settings of a model config: enabled when mup_base_width > 0; depth = number of layers.
MupConfig mup_config_for(const ModelConfig& model);

double mup_lr_multiplier(ParamClass cls, const MupConfig& config);
double mup_weight_decay_multiplier(ParamClass cls, const MupConfig& config);
double mup_init_std(ParamClass cls, int64_t fan_in, const MupConfig& config, double base_std);
double mup_logit_scale(const MupConfig& config);
double mup_residual_scale(const MupConfig& config);
double mup_attention_scale(const MupConfig& config, int64_t head_dim);

// Sets every parameter's init (kind and scale) by the config's init rule and μP++ (above), on
// the layout of the whole model (build_param_layout(model)).
void apply_init_rules(ParamLayout& layout, const ModelConfig& model);

// "normal std 0.02", "uniform bound 0.0221", "zeros", "ones", "Mamba A_log", ...
std::string describe_init(const ParamSpec& p);

// The optimizer's parameter groups as a run starts: tensors with the same learning rate, weight
// decay and init, each line naming them (layer indices folded into "*") with the learning rate
// and weight decay the optimizer gives them at the peak lr, and their init. For the log.
std::vector<std::string> describe_param_groups(const ParamLayout& initialised,
                                               const MupConfig& mup, double peak_lr,
                                               double weight_decay);

}  // namespace sambay
