#include "launch/gpu_engine.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "optim/clip.h"

#include <utility>

namespace sambay {

GpuEngine::GpuEngine(GpuEngine&& o) noexcept { *this = std::move(o); }

GpuEngine& GpuEngine::operator=(GpuEngine&& o) noexcept {
  std::swap(model, o.model);
  std::swap(acts, o.acts);
  std::swap(groups, o.groups);
  std::swap(groups_device, o.groups_device);
  std::swap(use_doc, o.use_doc);
  return *this;
}

GpuEngine::~GpuEngine() {
  if (groups_device) cuda_free(groups_device);
  if (model.stream) cuda_stream_destroy(model.stream);
}

GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, bool recompute, bool use_doc) {
  GpuEngine e;
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

double gpu_grad_norm(GpuEngine& e) {
  return global_grad_norm_cuda(e.model.grads, e.model.layout.total, e.model.stream);
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
