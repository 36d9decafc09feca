#include "launch/gpu_engine.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "optim/clip.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace sambay {

GpuEngine::GpuEngine(GpuEngine&& o) noexcept { *this = std::move(o); }

GpuEngine& GpuEngine::operator=(GpuEngine&& o) noexcept {
  std::swap(model, o.model);
  std::swap(acts, o.acts);
  std::swap(recompute, o.recompute);
  std::swap(use_doc, o.use_doc);
  std::swap(grads_group, o.grads_group);
  std::swap(tp, o.tp);
  std::swap(shards, o.shards);
  std::swap(groups, o.groups);
  std::swap(segments, o.segments);
  std::swap(bucket_segments, o.bucket_segments);
  std::swap(groups_device, o.groups_device);
  std::swap(staging, o.staging);
  std::swap(scalar, o.scalar);
  std::swap(norm_ranges, o.norm_ranges);
  std::swap(reduced_buckets, o.reduced_buckets);
  return *this;
}

GpuEngine::~GpuEngine() {
  for (void* p : {static_cast<void*>(groups_device), static_cast<void*>(staging),
                  static_cast<void*>(scalar)})
    if (p) cuda_free(p);
  if (model.stream) cuda_stream_destroy(model.stream);
}

namespace {

constexpr size_t kF = sizeof(float);

// The last bucket is padded to a multiple of the ranks: its collectives go through e.staging.
bool padded(const ShardLayout& s, const ShardBucket& b) { return b.piece * s.ranks != b.size; }

// Orders the group's next collectives after the work enqueued on the model's stream: NCCL's
// stream waits on an event (the host goes on); host-staged MPI reads through the host, so the
// model's stream is synchronised.
void group_after_model(const GpuEngine& e) {
  const Communicator& c = *e.grads_group;
  if (c.backend == CommBackend::nccl)
    cuda_stream_wait(comm_stream(c), e.model.stream);
  else
    cuda_stream_synchronize(e.model.stream);
}

// Orders the model stream's next work after the group's collectives.
void model_after_group(const GpuEngine& e) {
  const Communicator& c = *e.grads_group;
  if (c.backend == CommBackend::nccl)
    cuda_stream_wait(e.model.stream, comm_stream(c));
  else
    cuda_stream_synchronize(nullptr);  // the staging copies ran on the legacy default stream
}

// Bucket b's sum over the group, reduce-scattered: this rank's owned piece of it lands in place
// in model.grads. On the group's stream (NCCL) or the legacy default stream (MPI).
void reduce_scatter_bucket(GpuEngine& e, const ShardBucket& b) {
  const Communicator& c = *e.grads_group;
  float* g = e.model.grads;
  if (!padded(e.shards, b)) {
    reduce_scatter(c, g + b.begin, g + b.begin + c.rank * b.piece, b.piece, DType::f32,
                   ReduceOp::sum);
    return;
  }
  const cudaStream_t s = comm_stream(c);
  const FlatRange own = owned_range(e.shards, b, c.rank);
  float* mine = e.staging + c.rank * b.piece;
  cuda_copy_async(e.staging, g + b.begin, kF * b.size, s);
  cuda_memset_zero_async(e.staging + b.size, kF * (b.piece * c.size - b.size), s);
  reduce_scatter(c, e.staging, mine, b.piece, DType::f32, ReduceOp::sum);
  cuda_copy_async(g + own.begin, mine, kF * (own.end - own.begin), s);
}

// Every rank's owned piece of bucket b into e.staging [0, b.size); this rank's read from
// `mine` (its owned values, contiguous).
void gather_bucket(GpuEngine& e, const ShardBucket& b, const float* mine) {
  const Communicator& c = *e.grads_group;
  const cudaStream_t s = comm_stream(c);
  const FlatRange own = owned_range(e.shards, b, c.rank);
  float* slot = e.staging + c.rank * b.piece;
  cuda_copy_async(slot, mine, kF * (own.end - own.begin), s);
  cuda_memset_zero_async(slot + (own.end - own.begin), kF * (b.piece - (own.end - own.begin)), s);
  all_gather(c, slot, e.staging, b.piece, DType::f32);
}

// Hands to the group the buckets (from the end of the flat buffer, where backward starts) that
// lie wholly in [first, total) and are not handed over yet.
void reduce_ready_buckets(GpuEngine& e, int64_t first) {
  const std::vector<ShardBucket>& buckets = e.shards.buckets;
  while (e.reduced_buckets < static_cast<int64_t>(buckets.size())) {
    const ShardBucket& b = buckets[buckets.size() - 1 - e.reduced_buckets];
    if (b.begin < first) return;
    group_after_model(e);
    reduce_scatter_bucket(e, b);
    ++e.reduced_buckets;
  }
}

// The owned values counted in the gradient norm: every owned piece, less the whole TP tensors on
// TP ranks other than 0 (each such tensor is the same on every TP rank); adjacent runs merged.
std::vector<GpuEngine::Range> norm_ranges(const GpuEngine& e) {
  std::vector<GpuEngine::Range> out;
  auto add = [&](int64_t begin, int64_t end) {
    if (end <= begin) return;
    if (!out.empty() && out.back().end == begin)
      out.back().end = end;
    else
      out.push_back({begin, end});
  };
  const bool skip_whole = e.tp && e.tp->rank != 0;
  for (const ShardBucket& b : e.shards.buckets) {
    const FlatRange own = owned_range(e.shards, b, e.shards.rank);
    int64_t pos = own.begin;
    for (const ParamSpec& p : e.model.layout.params) {
      if (!skip_whole || p.tp_dim >= 0) continue;
      const int64_t lo = std::max(pos, p.offset), hi = std::min(own.end, p.offset + p.numel);
      if (lo >= hi) continue;
      add(pos, lo);
      pos = hi;
    }
    add(pos, own.end);
  }
  return out;
}

// A host value summed over a group, through the device (the group may be NCCL).
double sum_over(GpuEngine& e, const Communicator* c, double value) {
  if (!c) return value;
  cuda_copy_to_device(e.scalar, &value, sizeof(double));
  cuda_stream_synchronize(nullptr);
  all_reduce(*c, e.scalar, e.scalar, 1, DType::f64, ReduceOp::sum);
  wait(*c);
  cuda_copy_to_host(&value, e.scalar, sizeof(double));
  return value;
}

}  // namespace

GpuEngine make_gpu_engine(const Model<float>& cpu, std::vector<ParamGroup> groups, int64_t B,
                          int64_t L, RecomputeMode recompute, bool use_doc,
                          const Communicator* grads_group, const Communicator* tp,
                          int64_t bucket) {
  SAMBAY_CHECK(bucket > 0, "gradient bucket of {} values", bucket);
  GpuEngine e;
  e.grads_group = grads_group && grads_group->size > 1 ? grads_group : nullptr;
  e.tp = tp && tp->size > 1 ? tp : nullptr;
  const int64_t total = cpu.layout.total;
  // One rank owns one bucket, the whole buffer: the optimizer runs in one launch.
  e.shards = e.grads_group
                 ? make_shard_layout(total, bucket, e.grads_group->size, e.grads_group->rank)
                 : make_shard_layout(total, total, 1, 0);
  e.model = make_gpu_model(cpu, cuda_stream_create(), e.shards.shard_size);
  // The activations' budget: the free memory next to the model's state, less the headroom and
  // the gradient staging bucket allocated below.
  const int64_t staging_bytes =
      e.grads_group ? int64_t(kF) * e.shards.buckets.front().piece * e.grads_group->size : 0;
  const int64_t gpu_total = static_cast<int64_t>(cuda_memory_total());
  const int64_t free_bytes = gpu_total - static_cast<int64_t>(cuda_memory_used());
  const int64_t headroom = gpu_recompute_headroom(gpu_total);
  const int64_t budget = free_bytes - headroom - staging_bytes;
  auto gib = [](int64_t bytes) { return double(bytes) / double(int64_t(1) << 30); };
  e.recompute = resolve_recompute(
      recompute, e.model.config, B, L, budget, [&](const RecomputePlan& plan) {
        return planned_gpu_activation_bytes(e.model, B, L, plan);
      });
  e.recompute.log = fmt::format(
                        "recompute {}: {:.2f} GiB free on the GPU next to the model's state "
                        "({:.2f} GiB), less {:.2f} GiB headroom{}: {:.2f} GiB for activations\n",
                        recompute_mode_name(recompute), gib(free_bytes),
                        gib(static_cast<int64_t>(e.model.memory.capacity)), gib(headroom),
                        staging_bytes ? fmt::format(" and the {:.2f} GiB gradient staging bucket",
                                                    gib(staging_bytes))
                                      : std::string(),
                        gib(budget)) +
                    e.recompute.log;
  if (recompute == RecomputeMode::auto_choice && !e.recompute.fits)
    fail("recompute auto: the activations of micro-batch {} x {} need {:.2f} GiB even with every "
         "layer recomputed, and {:.2f} GiB are free for them on this GPU; lower --micro_batch or "
         "--seq_len, or split the model with --tp\n{}",
         B, L, gib(e.recompute.bytes), gib(budget), e.recompute.log);
  if (recompute != RecomputeMode::auto_choice && e.recompute.bytes > free_bytes - staging_bytes)
    fail("option --recompute {}: the activations of micro-batch {} x {} need {:.2f} GiB and "
         "{:.2f} GiB are free on this GPU; --recompute auto chooses what fits",
         recompute_mode_name(recompute), B, L, gib(e.recompute.bytes),
         gib(free_bytes - staging_bytes));
  e.acts = plan_gpu_activations(e.model, B, L, e.recompute.plan);
  e.groups = std::move(groups);
  e.segments = shard_segments(e.shards, e.groups);
  size_t k = 0;
  for (const ShardBucket& b : e.shards.buckets) {
    e.bucket_segments.push_back(static_cast<int64_t>(k));
    const FlatRange own = owned_range(e.shards, b, e.shards.rank);
    while (k < e.segments.size() && e.segments[k].flat < own.end) ++k;
  }
  e.bucket_segments.push_back(static_cast<int64_t>(k));
  e.groups_device = static_cast<AdamWGroup*>(cuda_malloc(
      sizeof(AdamWGroup) * std::max<size_t>(1, e.segments.size()), "AdamW parameter groups"));
  if (e.grads_group) {
    const ShardBucket& first = e.shards.buckets.front();
    e.staging = static_cast<float*>(
        cuda_malloc(kF * first.piece * e.grads_group->size, "gradient bucket staging"));
  }
  e.scalar = static_cast<double*>(cuda_malloc(sizeof(double), "gradient norm"));
  e.norm_ranges = norm_ranges(e);
  e.use_doc = use_doc;
  return e;
}

void gpu_zero_grads(GpuEngine& e) {
  cuda_memset_zero_async(e.model.grads, kF * e.model.layout.total, e.model.stream);
  e.reduced_buckets = 0;
}

ForwardResult gpu_forward_backward(GpuEngine& e, const int32_t* tokens, const int32_t* targets,
                                   const int32_t* doc, bool backward, float grad_scale,
                                   bool last_of_step) {
  upload_batch(e.model, e.acts, tokens, targets, e.use_doc ? doc : nullptr);
  ForwardResult r = gpu_model_forward(e.model, e.acts, e.use_doc);
  if (!backward) return r;
  GradsReady ready;
  if (last_of_step && e.grads_group) ready = [&e](int64_t first) { reduce_ready_buckets(e, first); };
  gpu_model_backward(e.model, e.acts, e.use_doc, grad_scale, ready);
  return r;
}

void gpu_reduce_gradients(GpuEngine& e) {
  if (e.grads_group) {
    reduce_ready_buckets(e, 0);
    wait(*e.grads_group);
    model_after_group(e);  // before the TP sums and the optimizer touch the gradients
  }
  if (e.tp) gpu_reduce_tensor_parallel_grads(e.model);
}

double gpu_grad_norm(GpuEngine& e) {
  double sq = 0;
  for (const GpuEngine::Range& r : e.norm_ranges) {
    const double norm = global_grad_norm_cuda(e.model.grads + r.begin, r.end - r.begin,
                                              e.model.stream);
    sq += norm * norm;
  }
  return std::sqrt(sum_over(e, e.tp, sum_over(e, e.grads_group, sq)));
}

void gpu_adamw_step(GpuEngine& e, double clip_coef, const AdamWHyper& base, int64_t step) {
  GpuModel& m = e.model;
  const ShardLayout& s = e.shards;
  // Per segment, its group's absolute rates, at its offset in its bucket's owned piece.
  std::vector<AdamWGroup> g;
  g.reserve(e.segments.size());
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    const FlatRange own = owned_range(s, s.buckets[b], s.rank);
    for (int64_t k = e.bucket_segments[b]; k < e.bucket_segments[b + 1]; ++k) {
      const ShardSegment& seg = e.segments[k];
      const ParamGroup& p = e.groups[seg.group];
      g.push_back({seg.flat - own.begin, seg.n, static_cast<float>(base.lr * p.lr_mult),
                   static_cast<float>(base.weight_decay * p.wd_mult)});
    }
  }
  if (!g.empty()) cuda_copy_async(e.groups_device, g.data(), sizeof(AdamWGroup) * g.size(), m.stream);
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    const ShardBucket& bucket = s.buckets[b];
    const FlatRange own = owned_range(s, bucket, s.rank);
    const int64_t n = own.end - own.begin;
    if (n == 0) continue;
    const int64_t first = e.bucket_segments[b];
    adamw_update_cuda(m.params + own.begin, m.grads + own.begin, m.adam_m + bucket.shard_offset,
                      m.adam_v + bucket.shard_offset, m.params_bf16 + own.begin, n,
                      e.groups_device + first,
                      static_cast<int>(e.bucket_segments[b + 1] - first), base.beta1, base.beta2,
                      base.eps, step, static_cast<float>(std::min(clip_coef, 1.0)), m.stream);
  }
  if (e.grads_group) {
    const Communicator& c = *e.grads_group;
    group_after_model(e);
    for (const ShardBucket& b : s.buckets) {
      if (!padded(s, b)) {
        all_gather(c, m.params + b.begin + c.rank * b.piece, m.params + b.begin, b.piece,
                   DType::f32);
        continue;
      }
      gather_bucket(e, b, m.params + owned_range(s, b, c.rank).begin);
      cuda_copy_async(m.params + b.begin, e.staging, kF * b.size, comm_stream(c));
    }
    wait(c);
    model_after_group(e);
    refresh_bf16_params(m);  // the other ranks' pieces (AdamW wrote this rank's)
  }
  // g (host) must outlive the asynchronous copy.
  cuda_stream_synchronize(m.stream);
}

void gpu_download_state(GpuEngine& e, std::vector<float>& params, std::vector<float>& m,
                        std::vector<float>& v) {
  const int64_t total = e.model.layout.total;
  params.resize(total), m.resize(total), v.resize(total);
  cuda_stream_synchronize(e.model.stream);
  cuda_copy_to_host(params.data(), e.model.params, kF * total);
  if (!e.grads_group) {  // one rank owns the whole buffer
    cuda_copy_to_host(m.data(), e.model.adam_m, kF * total);
    cuda_copy_to_host(v.data(), e.model.adam_v, kF * total);
    return;
  }
  for (const ShardBucket& b : e.shards.buckets)
    for (auto [shard, host] : {std::pair{e.model.adam_m, &m}, std::pair{e.model.adam_v, &v}}) {
      gather_bucket(e, b, shard + b.shard_offset);
      wait(*e.grads_group);
      cuda_stream_synchronize(comm_stream(*e.grads_group));
      cuda_copy_to_host(host->data() + b.begin, e.staging, kF * b.size);
    }
}

void gpu_upload_state(GpuEngine& e, const std::vector<float>& params, const std::vector<float>& m,
                      const std::vector<float>& v) {
  const int64_t total = e.model.layout.total;
  SAMBAY_CHECK(static_cast<int64_t>(params.size()) == total && m.size() == params.size() &&
                   v.size() == params.size(),
               "state of {} values for a model of {}", params.size(), total);
  cuda_stream_synchronize(e.model.stream);
  cuda_copy_to_device(e.model.params, params.data(), kF * total);
  for (const ShardBucket& b : e.shards.buckets) {
    const FlatRange own = owned_range(e.shards, b, e.shards.rank);
    cuda_copy_to_device(e.model.adam_m + b.shard_offset, m.data() + own.begin,
                        kF * (own.end - own.begin));
    cuda_copy_to_device(e.model.adam_v + b.shard_offset, v.data() + own.begin,
                        kF * (own.end - own.begin));
  }
  cuda_stream_synchronize(nullptr);  // pageable copies may land after they return
  refresh_bf16_params(e.model);
}

}  // namespace sambay
