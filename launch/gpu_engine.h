// The trainer's GPU side: the model, its activations and the AdamW state on one GPU, and the
// few operations a training step needs. Built only with the CUDA backend (SAMBAY_HAVE_CUDA).
#pragma once

#include "core/gpu_model.h"
#include "optim/adamw.h"
#include "parallel/data_parallel.h"

#include <cstdint>
#include <vector>

namespace sambay {

struct GpuEngine {
  GpuModel model;
  GpuActivations acts;
  std::vector<ParamGroup> groups;      // lr / weight-decay multipliers per parameter tensor
  AdamWGroup* groups_device = nullptr;  // their absolute values for the current step
  bool use_doc = true;
  GpuEngine() = default;
  GpuEngine(GpuEngine&&) noexcept;
  GpuEngine& operator=(GpuEngine&&) noexcept;
  ~GpuEngine();
};

// Uploads the CPU model's parameters (the fp32 master copy) and plans activations for [B, L].
GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, bool recompute, bool use_doc);

void gpu_zero_grads(GpuEngine& e);
// Uploads one micro-batch and runs forward (and backward with grad_scale when `backward`).
ForwardResult gpu_forward_backward(GpuEngine& e, const int32_t* tokens, const int32_t* targets,
                                   const int32_t* doc, bool backward, float grad_scale);
double gpu_grad_norm(GpuEngine& e);
// Clips by clip_coef and applies AdamW (base lr and weight decay times each group's
// multipliers); refreshes the bf16 compute copy in the same pass.
void gpu_adamw_step(GpuEngine& e, double clip_coef, const AdamWHyper& base, int64_t step);

// Parameters and moments between the GPU and host buffers of the flat layout (checkpoints).
void gpu_download_state(GpuEngine& e, std::vector<float>& params, std::vector<float>& m,
                        std::vector<float>& v);
void gpu_upload_state(GpuEngine& e, const std::vector<float>& params, const std::vector<float>& m,
                      const std::vector<float>& v);

}  // namespace sambay
