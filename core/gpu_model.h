// The SambaY model on one GPU: bf16 compute with fp32 accumulation, fp32 master weights,
// gradients and AdamW moments. The graph and its backward are the CPU model's (core/model.h),
// step for step, with the CUDA ops; the CPU model is its reference in tests.
//
// Parameters live in flat device buffers laid out as the CPU model's (core/param_layout.h):
// `params` (fp32 master), `params_bf16` (the compute copy, refreshed by the optimizer step),
// `grads` (fp32, accumulated over micro-batches). Matrices are read from the bf16 copy, vector-
// like parameters (norms, biases, A_log, D, lambda, conv) from the fp32 master.
#pragma once

#include "core/arena.h"
#include "core/bf16.h"
#include "core/cuda_stream.h"
#include "core/gpu_profile.h"
#include "core/model.h"

#include <cstdint>
#include <vector>

namespace sambay {

struct GpuModel {
  ModelConfig config;
  ParamLayout layout;
  double residual_scale = 1, logit_scale = 1;
  Arena memory;  // the device buffers below
  float* params = nullptr;
  bf16* params_bf16 = nullptr;
  float* grads = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
  cudaStream_t stream = nullptr;
  GpuProfile* profile = nullptr;  // when set, forward and backward time their op families
};

// Allocates the device buffers and copies the parameters of a CPU model (fp32 master) to them;
// zeroes gradients and moments. The CPU model's residual and logit scales carry over.
template <typename T>
GpuModel make_gpu_model(const Model<T>& cpu, cudaStream_t stream);
// The fp32 master parameters and gradients back on the host, in the flat layout.
std::vector<float> download_params(const GpuModel& m);
std::vector<float> download_grads(const GpuModel& m);
// Refreshes the bf16 compute copy from the fp32 master (after loading parameters).
void refresh_bf16_params(GpuModel& m);

// One layer's stored activations on the device. bf16 activations, fp32 statistics.
struct GpuLayerActivations {
  bf16* x_in = nullptr;
  float *ln1_mean = nullptr, *ln1_rstd = nullptr;
  bf16* a = nullptr;
  bf16* x_mid = nullptr;
  float *ln2_mean = nullptr, *ln2_rstd = nullptr;
  bf16 *a2 = nullptr, *h = nullptr, *s = nullptr;
  // Mamba: xs = silu(conv(xin)) (the conv output is recomputed in backward), scan checkpoint.
  bf16 *xin = nullptr, *z = nullptr, *xs = nullptr, *dl = nullptr, *bc = nullptr, *cc = nullptr,
       *dt = nullptr, *y = nullptr, *sout = nullptr;
  float* scan_checkpoint = nullptr;
  // Attention.
  bf16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  float* lse = nullptr;
  DiffAttentionSaved diff{};
  // GMU.
  bf16 *g = nullptr, *gm = nullptr;
  float* gmu_rstd = nullptr;
};

struct GpuBackwardScratch {
  bf16 *dres = nullptr, *dbranch = nullptr, *da = nullptr, *dh = nullptr, *ds = nullptr;
  bf16 *dxin = nullptr, *dz = nullptr, *dxs = nullptr, *ddl = nullptr, *dbc = nullptr,
       *dcc = nullptr, *ddt = nullptr, *dsout = nullptr;
  bf16 *dq = nullptr, *dk = nullptr, *dv = nullptr, *do_ = nullptr, *dq_rot = nullptr,
       *dk_rot = nullptr;
  bf16 *dg = nullptr, *dgm = nullptr;
  bf16 *dk_shared = nullptr, *dv_shared = nullptr, *dmemory = nullptr;
  float *conv_workspace = nullptr, *scan_workspace = nullptr;
};

struct GpuActivations {
  int64_t B = 0, L = 0;
  bool recompute = false;
  Arena memory;
  std::vector<GpuLayerActivations> layers;
  GpuBackwardScratch grad;
  bf16 *mixer_out = nullptr, *mlp_out = nullptr, *final_x = nullptr, *final_out = nullptr;
  float *final_mean = nullptr, *final_rstd = nullptr, *ce_lse = nullptr;
  int32_t *tokens = nullptr, *targets = nullptr, *doc = nullptr;  // the micro-batch, on the device
};

GpuActivations plan_gpu_activations(const GpuModel& model, int64_t B, int64_t L, bool recompute);
// Bytes the activations need (nothing allocated).
int64_t gpu_activation_bytes(const ModelConfig& config, int64_t B, int64_t L, bool recompute);

// Copies the host micro-batch (tokens, targets, doc; [B, L]; doc may be null) to the device,
// checking every token against the vocabulary first (the GPU embedding does not check).
void upload_batch(const GpuModel& model, GpuActivations& acts, const int32_t* tokens,
                  const int32_t* targets, const int32_t* doc);

// Forward and loss on the uploaded batch (synchronises to return the loss).
ForwardResult gpu_model_forward(const GpuModel& model, GpuActivations& acts, bool use_doc);
// Adds grad_scale * d(loss_sum)/d(params) into model.grads (does not synchronise).
void gpu_model_backward(GpuModel& model, GpuActivations& acts, bool use_doc, float grad_scale);

}  // namespace sambay
