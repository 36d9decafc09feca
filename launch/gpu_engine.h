// The trainer's GPU side: the model, its activations and the AdamW state on one GPU, and the
// few operations a training step needs. Built only with the CUDA backend (SAMBAY_HAVE_CUDA).
//
// With several ranks, each rank's GPU holds its TP shard of the model (the CPU model it is built
// from is the shard), and the gradient group (the data- and context-parallel ranks of one TP
// rank) shares the optimizer as the CPU backend does (ZeRO stage 1, parallel/data_parallel.h's
// ShardLayout): the flat gradient is reduce-scattered bucket by bucket, in place, each rank
// receiving the sum of the piece of every bucket it owns; the buckets of the step's last
// micro-batch are handed to the group while its backward still runs (on NCCL's own stream,
// overlapped with the remaining layers; host-staged MPI blocks instead). Each rank keeps AdamW
// moments for its pieces only, updates them, and the fp32 parameters are all-gathered bucket by
// bucket (the bf16 compute copy is then refreshed). The communicators are NCCL when each rank has
// a GPU of its own, MPI through host memory when ranks share one (tests). One rank is the same
// code with one bucket that it owns whole.
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
  RecomputeChoice recompute;  // the activations' recompute plan, and why (for the run's log)
  bool use_doc = true;
  const Communicator* grads_group = nullptr;  // gradient sums (dp x cp ranks); null: one rank
  const Communicator* tp = nullptr;           // tensor-parallel group; null: one rank
  ShardLayout shards;                         // over grads_group; model.adam_m/v are its shard
  std::vector<ParamGroup> groups;             // lr / weight-decay multipliers per tensor
  std::vector<ShardSegment> segments;         // the owned runs of each group, in flat order
  std::vector<int64_t> bucket_segments;       // bucket b's segments: [bs[b], bs[b + 1])
  AdamWGroup* groups_device = nullptr;        // per segment, relative to its bucket's piece
  float* staging = nullptr;                   // one bucket (the padded last one's collectives)
  double* scalar = nullptr;                   // a device double (the norm's sums)
  struct Range {
    int64_t begin, end;
  };
  std::vector<Range> norm_ranges;  // owned values counted in the norm (whole TP tensors once)
  int64_t reduced_buckets = 0;     // this step's buckets handed to the group, from the last
  GpuEngine() = default;
  GpuEngine(GpuEngine&&) noexcept;
  GpuEngine& operator=(GpuEngine&&) noexcept;
  ~GpuEngine();
};

// Uploads the CPU model's parameters (the fp32 master copy) and plans activations for [B, L]
// with the recompute mode (core/recompute_plan.h): auto takes the least recompute whose
// activations fit the GPU's free memory once the model's state is allocated, less
// gpu_recompute_headroom (core/activations.h) and the gradient staging bucket; the choice
// and why land in `recompute`. grads_group and tp (GPU-buffer communicators, not owned) may be
// null for one rank; bucket: values per gradient bucket.
GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, RecomputeMode recompute, bool use_doc,
                          const Communicator* grads_group = nullptr,
                          const Communicator* tp = nullptr, int64_t bucket = 1 << 22);

void gpu_zero_grads(GpuEngine& e);
// Uploads one micro-batch and runs forward (and backward with grad_scale when `backward`). On
// the step's last micro-batch (last_of_step) the gradient buckets are handed to the group as
// their backward completes.
ForwardResult gpu_forward_backward(GpuEngine& e, const int32_t* tokens, const int32_t* targets,
                                   const int32_t* doc, bool backward, float grad_scale,
                                   bool last_of_step = false);
// Completes the step's gradient sums: over the gradient group (the buckets not handed over
// during backward, then waits for all; afterwards only the owned pieces hold sums), then over
// the TP group (whole tensors each TP rank computed in part). A no-op for one rank.
void gpu_reduce_gradients(GpuEngine& e);
// The global gradient norm (after gpu_reduce_gradients), from the owned pieces summed over the
// group; under TP the ranks' shards are added, whole tensors counted once.
double gpu_grad_norm(GpuEngine& e);
// Clips by clip_coef and applies AdamW to the owned pieces (base lr and weight decay times each
// group's multipliers), then all-gathers the parameters and refreshes the bf16 compute copy.
void gpu_adamw_step(GpuEngine& e, double clip_coef, const AdamWHyper& base, int64_t step);

// Parameters and moments between the GPU and host buffers of the flat layout (checkpoints): the
// moments are gathered over the group for a download (a collective), and each rank takes its
// pieces on upload.
void gpu_download_state(GpuEngine& e, std::vector<float>& params, std::vector<float>& m,
                        std::vector<float>& v);
void gpu_upload_state(GpuEngine& e, const std::vector<float>& params, const std::vector<float>& m,
                      const std::vector<float>& v);

}  // namespace sambay
