#include "launch/gpu_engine.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace sambay {

GpuEngine::GpuEngine(GpuEngine&& o) noexcept { *this = std::move(o); }

GpuEngine& GpuEngine::operator=(GpuEngine&& o) noexcept {
  std::swap(model, o.model);
  std::swap(acts, o.acts);
  std::swap(groups, o.groups);
  std::swap(groups_device, o.groups_device);
  std::swap(use_doc, o.use_doc);
  std::swap(grads_group, o.grads_group);
  std::swap(tp, o.tp);
  std::swap(bucket, o.bucket);
  return *this;
}

GpuEngine::~GpuEngine() {
  if (groups_device) cuda_free(groups_device);
  if (model.stream) cuda_stream_destroy(model.stream);
}

GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, bool recompute, bool use_doc,
                          const Communicator* grads_group, const Communicator* tp,
                          int64_t bucket) {
  SAMBAY_CHECK(bucket > 0, "gradient bucket of {} values", bucket);
  GpuEngine e;
  e.grads_group = grads_group && grads_group->size > 1 ? grads_group : nullptr;
  e.tp = tp && tp->size > 1 ? tp : nullptr;
  e.bucket = bucket;
  e.model = make_gpu_model(cpu, cuda_stream_create());
  e.acts = plan_gpu_activations(e.model, B, L, recompute);
  e.groups = std::move(groups);
  e.groups_device = static_cast<AdamWGroup*>(
      cuda_malloc(sizeof(AdamWGroup) * e.groups.size(), "AdamW parameter groups"));
  e.use_doc = use_doc;
  return e;
}

void gpu_zero_grads(GpuEngine& e) {
  cuda_memset_zero_async(e.model.grads, sizeof(float) * e.model.layout.total, e.model.stream);
}

ForwardResult gpu_forward_backward(GpuEngine& e, const int32_t* tokens, const int32_t* targets,
                                   const int32_t* doc, bool backward, float grad_scale) {
  upload_batch(e.model, e.acts, tokens, targets, e.use_doc ? doc : nullptr);
  ForwardResult r = gpu_model_forward(e.model, e.acts, e.use_doc);
  if (backward) gpu_model_backward(e.model, e.acts, e.use_doc, grad_scale);
  return r;
}

void gpu_reduce_gradients(GpuEngine& e) {
  if (!e.grads_group && !e.tp) return;
  if (e.tp) gpu_reduce_tensor_parallel_grads(e.model);
  if (!e.grads_group) return;
  // The collectives read what backward wrote on the model's stream.
  cuda_stream_synchronize(e.model.stream);
  const int64_t total = e.model.layout.total;
  for (int64_t begin = 0; begin < total; begin += e.bucket) {
    const int64_t n = std::min(e.bucket, total - begin);
    all_reduce(*e.grads_group, e.model.grads + begin, e.model.grads + begin, n, DType::f32,
               ReduceOp::sum);
  }
  wait(*e.grads_group);
}

double gpu_grad_norm(GpuEngine& e) {
  const double norm = global_grad_norm_cuda(e.model.grads, e.model.layout.total, e.model.stream);
  if (!e.tp) return norm;
  double sq = norm * norm;
  if (e.tp->rank != 0)  // whole tensors (the same on every TP rank) count on TP rank 0 only
    for (const ParamSpec& p : e.model.layout.params)
      if (p.tp_dim < 0) {
        const double whole = global_grad_norm_cuda(e.model.grads + p.offset, p.numel,
                                                   e.model.stream);
        sq -= whole * whole;
      }
  // One value summed over the TP ranks, through the device (the group's backend may be NCCL).
  double* dev = static_cast<double*>(cuda_malloc(sizeof(double), "gradient norm"));
  cuda_copy_to_device(dev, &sq, sizeof(double));
  all_reduce(*e.tp, dev, dev, 1, DType::f64, ReduceOp::sum);
  wait(*e.tp);
  cuda_copy_to_host(&sq, dev, sizeof(double));
  cuda_free(dev);
  return std::sqrt(sq);
}

void gpu_adamw_step(GpuEngine& e, double clip_coef, const AdamWHyper& base, int64_t step) {
  if (clip_coef < 1)
    scale_gradients_cuda(e.model.grads, e.model.layout.total, static_cast<float>(clip_coef),
                         e.model.stream);
  std::vector<AdamWGroup> g;
  g.reserve(e.groups.size());
  for (const ParamGroup& p : e.groups)
    g.push_back({p.offset, p.numel, static_cast<float>(base.lr * p.lr_mult),
                 static_cast<float>(base.weight_decay * p.wd_mult)});
  cuda_copy_async(e.groups_device, g.data(), sizeof(AdamWGroup) * g.size(), e.model.stream);
  adamw_update_cuda(e.model.params, e.model.grads, e.model.adam_m, e.model.adam_v,
                    e.model.params_bf16, e.model.layout.total, e.groups_device,
                    static_cast<int>(g.size()), base.beta1, base.beta2, base.eps, step,
                    e.model.stream);
  // g (host) must outlive the asynchronous copy.
  cuda_stream_synchronize(e.model.stream);
}

void gpu_download_state(GpuEngine& e, std::vector<float>& params, std::vector<float>& m,
                        std::vector<float>& v) {
  const size_t bytes = sizeof(float) * e.model.layout.total;
  params.resize(e.model.layout.total), m.resize(e.model.layout.total), v.resize(e.model.layout.total);
  cuda_stream_synchronize(e.model.stream);
  cuda_copy_to_host(params.data(), e.model.params, bytes);
  cuda_copy_to_host(m.data(), e.model.adam_m, bytes);
  cuda_copy_to_host(v.data(), e.model.adam_v, bytes);
}

void gpu_upload_state(GpuEngine& e, const std::vector<float>& params, const std::vector<float>& m,
                      const std::vector<float>& v) {
  const size_t bytes = sizeof(float) * e.model.layout.total;
  SAMBAY_CHECK(params.size() * sizeof(float) == bytes && m.size() == params.size() &&
                   v.size() == params.size(),
               "state of {} values for a model of {}", params.size(), e.model.layout.total);
  cuda_stream_synchronize(e.model.stream);
  cuda_copy_to_device(e.model.params, params.data(), bytes);
  cuda_copy_to_device(e.model.adam_m, m.data(), bytes);
  cuda_copy_to_device(e.model.adam_v, v.data(), bytes);
  refresh_bf16_params(e.model);
}

}  // namespace sambay
