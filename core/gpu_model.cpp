#include "core/gpu_model.h"

#include "core/check.h"
#include "core/cuda_backend.h"
#include "core/cuda_runtime.h"
#include "core/graph.h"
#include "core/model_graph.h"

namespace sambay {

namespace {

// The TP group when it has more than one rank; null otherwise (the single-rank path).
const Communicator* tensor_parallel_group(const ModelSplit& s) {
  return s.tp && s.tp->size > 1 ? s.tp : nullptr;
}

// What the GPU model runs of a split: TP, with or without SP (refused before any GPU work).
void check_gpu_split(const ModelConfig& c, const ModelSplit& s) {
  if (s.cp && s.cp->size > 1)
    fail("model '{}': context parallelism (cp = {}) is CPU-only for now; the GPU model runs "
         "tensor (and sequence) and data parallelism only",
         c.name, s.cp->size);
  const Communicator* tp = tensor_parallel_group(s);
  if (!tp) return;
  if (c.normalized_gmu && layer_kinds_present(c).gmu)
    fail("model '{}': the nGMU under tensor parallelism (tp = {}) is CPU-only for now: its norm "
         "spans every TP rank's channels",
         c.name, tp->size);
  if (tp->backend == CommBackend::mpi)
    fail("model '{}': tensor parallelism on the GPU needs a communicator on device buffers "
         "(mpi_host_staged or nccl), but group '{}' has backend {}",
         c.name, tp->name, backend_name(tp->backend));
}

// The activation plan's shape for this model's split.
ActivationShape activation_shape(const GpuModel& model, int64_t B, int64_t L) {
  const ModelSplit& s = model.split;
  const RowSplit rows = row_split(s.tp, s.sequence_parallel, B * L);
  return {B, L, rows.nr, rows.tp != nullptr, 1};
}

}  // namespace

template <typename T>
GpuModel make_gpu_model(const Model<T>& cpu, cudaStream_t stream, int64_t optimizer_values) {
  check_gpu_split(cpu.config, cpu.split);
  GpuModel m;
  m.config = cpu.config;
  m.full_config = cpu.full_config;
  m.split = cpu.split;
  m.layout = cpu.layout;
  m.residual_scale = cpu.residual_scale;
  m.logit_scale = cpu.logit_scale;
  m.attention_scale = cpu.attention_scale;
  m.stream = stream;
  const int64_t n = cpu.layout.total;
  const int64_t k = optimizer_values < 0 ? n : optimizer_values;
  m.optimizer_values = k;
  // Five buffers, each rounded up to the arena's 256-byte alignment.
  m.memory = Arena(Device::cuda, 4 * (2 * n + 2 * k) + 2 * n + 5 * 256,
                   "parameters and optimizer");
  m.params = m.memory.alloc(DType::f32, {n}).ptr<float>();
  m.params_bf16 = m.memory.alloc(DType::bf16, {n}).ptr<bf16>();
  m.grads = m.memory.alloc(DType::f32, {n}).ptr<float>();
  m.adam_m = m.memory.alloc(DType::f32, {k}).ptr<float>();
  m.adam_v = m.memory.alloc(DType::f32, {k}).ptr<float>();
  std::vector<float> host(cpu.params.begin(), cpu.params.end());
  cuda_copy_to_device(m.params, host.data(), sizeof(float) * n);
  cuda_memset_zero(m.grads, sizeof(float) * n);
  for (float* p : {m.adam_m, m.adam_v}) cuda_memset_zero(p, sizeof(float) * k);
  refresh_bf16_params(m);
  return m;
}

void gpu_reduce_tensor_parallel_grads(GpuModel& m) {
  const Communicator* tp = tensor_parallel_group(m.split);
  if (!tp) return;
  // One collective per run of adjacent such tensors (a layer's lambdas and head norm; under SP
  // also the whole tensors, each rank's gradient from its own rows: embedding, norms, biases).
  const bool sp = m.split.sequence_parallel;
  int64_t begin = 0, end = 0;
  auto flush = [&] {
    if (end <= begin) return;
    cuda_stream_synchronize(m.stream);
    all_reduce(*tp, m.grads + begin, m.grads + begin, end - begin, DType::f32, ReduceOp::sum);
    wait(*tp);
  };
  for (const ParamSpec& p : m.layout.params) {
    if (!(p.tp_partial_grad || (p.tp_dim < 0 && sp))) continue;
    if (p.offset != end) flush(), begin = end = p.offset;
    end += p.numel;
  }
  flush();
}

std::vector<float> download_params(const GpuModel& m) {
  std::vector<float> h(m.layout.total);
  cuda_stream_synchronize(m.stream);
  cuda_copy_to_host(h.data(), m.params, sizeof(float) * h.size());
  return h;
}

std::vector<float> download_grads(const GpuModel& m) {
  std::vector<float> h(m.layout.total);
  cuda_stream_synchronize(m.stream);
  cuda_copy_to_host(h.data(), m.grads, sizeof(float) * h.size());
  return h;
}

void refresh_bf16_params(GpuModel& m) {
  cuda_stream_synchronize(m.stream);
  convert_to_bf16_cuda(m.params, m.params_bf16, m.layout.total);
  cuda_synchronize();
}

GpuActivations plan_gpu_activations(const GpuModel& model, int64_t B, int64_t L,
                                    const RecomputePlan& recompute) {
  const int64_t bytes = planned_gpu_activation_bytes(model, B, L, recompute);
  GpuActivations acts;
  acts.B = B, acts.L = L, acts.recompute = recompute;
  acts.arena = Arena(Device::cuda, static_cast<size_t>(bytes), "activations");
  allocate_activations(model.config, activation_shape(model, B, L), recompute, kCudaPlan,
                       acts.arena, acts);
  return acts;
}

int64_t planned_gpu_activation_bytes(const GpuModel& model, int64_t B, int64_t L,
                                     const RecomputePlan& recompute) {
  SAMBAY_CHECK(B > 0 && L > 0, "micro-batch shape must be positive, got B={} L={}", B, L);
  const ActivationShape shape = activation_shape(model, B, L);
  return gpu_activation_bytes(model.config, B, L, recompute, shape.tp, shape.nr);
}

void upload_batch(const GpuModel& model, GpuActivations& acts, const int32_t* tokens,
                  const int32_t* targets, const int32_t* doc) {
  const int64_t n = acts.B * acts.L;
  const int64_t V = model.config.vocab;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      fail("token {} at position {} of the batch is outside the vocabulary [0, {})", tokens[i], i,
           V);
    if (targets[i] >= V)
      fail("target {} at position {} of the batch is outside the vocabulary [0, {})", targets[i],
           i, V);
  }
  cuda_copy_async(acts.tokens, tokens, sizeof(int32_t) * n, model.stream);
  cuda_copy_async(acts.targets, targets, sizeof(int32_t) * n, model.stream);
  if (doc) cuda_copy_async(acts.doc, doc, sizeof(int32_t) * n, model.stream);
  // The host arrays may be reused by the caller as soon as this returns.
  cuda_stream_synchronize(model.stream);
}

ForwardResult gpu_model_forward(const GpuModel& model, GpuActivations& acts, bool use_doc) {
  CudaBackend be(model, acts, model.grads, use_doc);
  return graph::forward(be);
}

void gpu_model_backward(GpuModel& model, GpuActivations& acts, bool use_doc, float grad_scale,
                        const GradsReady& grads_ready) {
  CudaBackend be(model, acts, model.grads, use_doc);
  graph::backward(be, grad_scale, grads_ready);
}

template GpuModel make_gpu_model<float>(const Model<float>&, cudaStream_t, int64_t);
template GpuModel make_gpu_model<double>(const Model<double>&, cudaStream_t, int64_t);

}  // namespace sambay
