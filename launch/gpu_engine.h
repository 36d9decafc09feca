// The trainer's GPU side: the model, its activations and the AdamW state on one GPU, and the
// few operations a training step needs. Built only with the CUDA backend (SAMBAY_HAVE_CUDA).
//
// With several ranks, each rank's GPU holds its TP shard of the model (the CPU model it is built
// from is the shard); after backward the gradients are summed over the gradient group (the data-
// and context-parallel ranks of one TP rank) in buckets, and every rank of the group applies the
// same AdamW update to the summed gradient (the optimizer state is replicated over the group on
// the GPU; the CPU backend shards it, parallel/data_parallel.h). The communicators are NCCL when
// each rank has a GPU of its own, MPI through host memory when ranks share one (tests).
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
  const Communicator* grads_group = nullptr;  // gradient sums (dp x cp ranks); null: one rank
  const Communicator* tp = nullptr;           // tensor-parallel group; null: one rank
  int64_t bucket = 0;                         // values per gradient all-reduce
  GpuEngine() = default;
  GpuEngine(GpuEngine&&) noexcept;
  GpuEngine& operator=(GpuEngine&&) noexcept;
  ~GpuEngine();
};

// Uploads the CPU model's parameters (the fp32 master copy) and plans activations for [B, L].
// grads_group and tp (GPU-buffer communicators, not owned) may be null for one rank.
GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, bool recompute, bool use_doc,
                          const Communicator* grads_group = nullptr,
                          const Communicator* tp = nullptr, int64_t bucket = 1 << 22);

void gpu_zero_grads(GpuEngine& e);
// Uploads one micro-batch and runs forward (and backward with grad_scale when `backward`).
ForwardResult gpu_forward_backward(GpuEngine& e, const int32_t* tokens, const int32_t* targets,
                                   const int32_t* doc, bool backward, float grad_scale);
// Sums the gradients over the TP group (whole tensors each TP rank computed in part) and over
// the gradient group, bucket by bucket. A no-op for one rank.
void gpu_reduce_gradients(GpuEngine& e);
// The global gradient norm (after gpu_reduce_gradients): under TP the ranks' shards are added,
// whole tensors counted once.
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
