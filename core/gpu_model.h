// The SambaY model on one GPU: bf16 compute with fp32 accumulation, fp32 master weights,
// gradients and AdamW moments. Forward and backward are the model graph (core/graph.h) on the
// CUDA backend (core/cuda_backend.h); the CPU model (core/model.h), the same graph on the CPU
// backend in double, is its reference in tests.
//
// Parameters live in flat device buffers laid out as the CPU model's (core/param_layout.h):
// `params` (fp32 master), `params_bf16` (the compute copy, refreshed by the optimizer step),
// `grads` (fp32, accumulated over micro-batches). Matrices are read from the bf16 copy, vector-
// like parameters (norms, biases, A_log, D, lambda, conv) from the fp32 master.
//
// Tensor parallelism (the CPU model's Megatron split, core/model.h ModelSplit): a GpuModel made
// from a make_model_shard CPU model holds this rank's shard and runs it with the TP group's sums
// (core/cuda_backend.h says how: fp32 partial sums, rounded to bf16 once). The attention output
// bias is added on TP rank 0 only.
//
// Sequence parallelism (ModelSplit::sequence_parallel, under TP; the CPU model's): the residual
// stream, the norms, the embedding and the loss cover this rank's nr = B L / tp rows
// [rank nr, (rank + 1) nr). A region's entry all-gathers the bf16 normed rows (into
// GpuActivations::region_in; the backward gathers the saved rows again rather than keeping them
// whole), its exit reduce-scatters the fp32 partial sums and rounds this rank's rows to bf16 once;
// in backward the block outputs' gradients are all-gathered and the regions' input gradients
// reduce-scattered. The loss sum and valid count are summed over TP, and the gradients of whole
// tensors (each rank's from its own rows; the attention output bias's too) are summed over TP by
// gpu_reduce_tensor_parallel_grads. Context parallelism and the nGMU under TP are CPU-only for
// now (make_gpu_model refuses them). With no TP group, or one of size 1, nothing changes: no
// collective, no extra synchronisation.
#pragma once

#include "core/activations.h"
#include "core/arena.h"
#include "core/bf16.h"
#include "core/cuda_stream.h"
#include "core/gpu_profile.h"
#include "core/model.h"
#include "core/model_graph.h"

#include <cstdint>
#include <vector>

namespace sambay {

struct GpuModel {
  ModelConfig config;       // what this rank runs: the configured model or its TP shard
  ModelConfig full_config;  // the model as configured
  ParamLayout layout;       // of config
  double residual_scale = 1, logit_scale = 1, attention_scale = 1;
  Arena memory;  // the device buffers below
  float* params = nullptr;
  bf16* params_bf16 = nullptr;
  float* grads = nullptr;
  float* adam_m = nullptr;  // [optimizer_values]: the whole layout, or a sharded optimizer's
  float* adam_v = nullptr;  // share of it (launch/gpu_engine.h)
  int64_t optimizer_values = 0;
  cudaStream_t stream = nullptr;
  GpuProfile* profile = nullptr;  // when set, forward and backward time their op families
  // The CPU model's split. A TP group of several ranks must reduce device buffers (backend
  // mpi_host_staged or nccl); its collectives synchronise `stream` before they read a buffer and
  // return with the sum in place for the stream's later work (NCCL: wait(); host-staged: the
  // staging copies are blocking and are synchronised).
  ModelSplit split;
};

// Allocates the device buffers and copies the parameters of a CPU model (fp32 master) to them;
// zeroes gradients and moments. The CPU model's residual, logit and attention scales, configs and
// split carry over (a shard from make_model_shard gives a TP shard on the GPU). Throws sambay::Error,
// before touching the GPU, for what the GPU model does not run yet: context parallelism, the
// nGMU under TP, or a TP group whose backend reduces host buffers (mpi).
template <typename T>
// optimizer_values: the AdamW moments' length (-1: the whole layout).
GpuModel make_gpu_model(const Model<T>& cpu, cudaStream_t stream, int64_t optimizer_values = -1);
// The GPU form of reduce_tensor_parallel_grads: sums over the TP group the fp32 gradients of
// whole tensors that each TP rank computed only in part (ParamSpec::tp_partial_grad:
// differential attention's lambda vectors and head norm; under sequence parallelism every whole
// tensor, ParamSpec::tp_dim < 0, each rank's gradient being from its own rows). Call once per
// step, after the last micro-batch's backward and before gradients are reduced over data
// parallelism. Does nothing without a TP group of several ranks.
void gpu_reduce_tensor_parallel_grads(GpuModel& m);
// The fp32 master parameters and gradients back on the host, in the flat layout.
std::vector<float> download_params(const GpuModel& m);
std::vector<float> download_grads(const GpuModel& m);
// Refreshes the bf16 compute copy from the fp32 master (after loading parameters).
void refresh_bf16_params(GpuModel& m);

// Plans the activations for micro-batches [B, L] (core/activations.h) on this model's split
// (its TP partial-sum buffer and sequence-parallel rows) and allocates them on the device.
GpuActivations plan_gpu_activations(const GpuModel& model, int64_t B, int64_t L,
                                    const RecomputePlan& recompute);
// Bytes of that plan (nothing allocated).
int64_t planned_gpu_activation_bytes(const GpuModel& model, int64_t B, int64_t L,
                                     const RecomputePlan& recompute);
// Every layer recomputed and no loss chunk kept, or nothing recomputed.
inline GpuActivations plan_gpu_activations(const GpuModel& model, int64_t B, int64_t L,
                                           bool recompute) {
  return plan_gpu_activations(model, B, L, uniform_recompute(model.config, recompute));
}

// Copies the host micro-batch (tokens, targets, doc; [B, L]; doc may be null) to the device,
// checking every token against the vocabulary first (the GPU embedding does not check).
void upload_batch(const GpuModel& model, GpuActivations& acts, const int32_t* tokens,
                  const int32_t* targets, const int32_t* doc);

// Forward and loss on the uploaded batch (synchronises to return the loss). Under TP every rank
// of the group computes the whole loss (the same value; under SP each rank its rows', summed
// over the group).
ForwardResult gpu_model_forward(const GpuModel& model, GpuActivations& acts, bool use_doc);
// Adds grad_scale * d(loss_sum)/d(params) into model.grads (does not synchronise). grads_ready
// (core/model_graph.h) is told as each layer's gradients complete, their kernels enqueued on
// model.stream.
void gpu_model_backward(GpuModel& model, GpuActivations& acts, bool use_doc, float grad_scale,
                        const GradsReady& grads_ready = {});

}  // namespace sambay
