#include "tools/sweep/perf_model.h"

#include "core/check.h"

#include <algorithm>
#include <cmath>

namespace sambay::sweep {

ClusterSpec cluster_spec_from(const ConfigFile& in, const std::string& section) {
  const std::string p = section + ".";
  ClusterSpec cl;
  cl.gpus_per_node = in.get_int(p + "gpus_per_node", 8);
  cl.nvlink_bandwidth = in.get_double(p + "nvlink_bandwidth", 360e9);
  cl.nvlink_latency = in.get_double(p + "nvlink_latency", 5e-6);
  cl.network_bandwidth = in.get_double(p + "network_bandwidth", 45e9);
  cl.network_latency = in.get_double(p + "network_latency", 10e-6);
  cl.gpu_memory = in.get_double(p + "gpu_memory", 80e9);
  return cl;
}

double ring_collective_seconds(double bytes, int64_t p, double bandwidth, double latency) {
  if (p <= 1) return 0;
  return double(p - 1) / p * bytes / bandwidth + double(p - 1) * latency;
}

StepPrediction predict_step(const StepProfile& prof, const ClusterSpec& cl,
                            const ParallelConfig& pc) {
  SAMBAY_CHECK(pc.gpus >= 1 && pc.tp >= 1, "gpus {} and tp {} must be >= 1", pc.gpus, pc.tp);
  SAMBAY_CHECK(pc.gpus % pc.tp == 0, "tp {} does not divide {} GPUs", pc.tp, pc.gpus);
  SAMBAY_CHECK(pc.tp <= cl.gpus_per_node && cl.gpus_per_node % pc.tp == 0,
               "tp {} must divide the {} GPUs of a node (TP stays inside a node)", pc.tp,
               cl.gpus_per_node);
  SAMBAY_CHECK(pc.tokens_per_replica > 0 && pc.micro_batch_tokens > 0 &&
                   pc.micro_batch_tokens <= pc.tokens_per_replica,
               "need 0 < micro_batch_tokens {} <= tokens_per_replica {}", pc.micro_batch_tokens,
               pc.tokens_per_replica);
  SAMBAY_CHECK(prof.seconds_per_token > 0 && prof.params > 0, "the profile needs seconds_per_token and params");
  SAMBAY_CHECK(pc.tp_compute_efficiency > 0 && pc.tp_compute_efficiency <= 1,
               "tp_compute_efficiency {} must be in (0, 1]", pc.tp_compute_efficiency);

  StepPrediction p;
  p.gpus = pc.gpus;
  p.tp = pc.tp;
  p.dp = pc.gpus / pc.tp;
  p.nodes = (pc.gpus + cl.gpus_per_node - 1) / cl.gpus_per_node;
  p.micro_batches = std::max<int64_t>(1, std::llround(pc.tokens_per_replica / pc.micro_batch_tokens));
  const double tp = double(pc.tp), dp = double(p.dp);

  p.compute = pc.tokens_per_replica * prof.seconds_per_token / (tp * (pc.tp > 1 ? pc.tp_compute_efficiency : 1));
  const double backward = p.compute * 2 / 3, forward = p.compute / 3;

  if (pc.tp > 1) {
    const double bytes = pc.micro_batch_tokens * prof.d_model * pc.activation_bytes;
    const double one = ring_collective_seconds(bytes, pc.tp, cl.nvlink_bandwidth, cl.nvlink_latency);
    p.tp_comm = one * pc.tp_collectives_per_layer * prof.n_layers * p.micro_batches;
  }

  const double shard_params = prof.params / tp;
  if (p.dp > 1) {
    const double bucket = pc.bucket_params > 0 ? pc.bucket_params : std::max(4e7, 1e6 * dp);
    p.buckets = std::max<int64_t>(1, std::llround(std::ceil(shard_params / bucket)));
    // Members of one DP group per node: the GPUs of a node not used by the other TP ranks.
    const int64_t per_node = std::min<int64_t>(p.dp, cl.gpus_per_node / pc.tp);
    const bool spans_nodes = p.dp > per_node;
    const double bw = spans_nodes ? std::min(cl.nvlink_bandwidth, per_node * cl.network_bandwidth)
                                  : cl.nvlink_bandwidth;
    const double lat = spans_nodes ? cl.network_latency : cl.nvlink_latency;
    auto collective = [&](double bytes_per_param) {
      return p.buckets * ring_collective_seconds(shard_params * bytes_per_param / p.buckets,
                                                 p.dp, bw, lat);
    };
    p.grad_reduce_scatter = collective(pc.grad_bytes);
    p.param_all_gather = collective(pc.param_bytes);
    // Overlap windows: the last micro-batch's backward and the first micro-batch's forward;
    // the last (first) bucket cannot start before that backward ends (forward starts).
    auto exposed = [&](double t, bool overlap, double window) {
      return overlap ? std::max(t / p.buckets, t - window) : t;
    };
    p.exposed_dp_comm = exposed(p.grad_reduce_scatter, pc.overlap_grad_reduce, backward / p.micro_batches) +
                        exposed(p.param_all_gather, pc.overlap_param_gather, forward / p.micro_batches);
  }
  p.optimizer = prof.optimizer_seconds / (tp * dp);
  p.step = p.compute + p.tp_comm + p.exposed_dp_comm + p.optimizer;
  p.tokens_per_s = dp * pc.tokens_per_replica / p.step;
  p.tokens_per_s_per_gpu = p.tokens_per_s / pc.gpus;
  const double single = pc.tokens_per_replica * prof.seconds_per_token + prof.optimizer_seconds;
  p.efficiency = p.tokens_per_s_per_gpu / (pc.tokens_per_replica / single);
  p.comm_efficiency = 1 - (p.tp_comm + p.exposed_dp_comm) / p.step;
  p.memory_bytes = shard_params * (pc.param_bytes + pc.grad_bytes) +
                   prof.params * pc.optimizer_state_bytes / (tp * dp) +
                   prof.activation_bytes_per_micro_batch / tp;
  return p;
}

}  // namespace sambay::sweep
