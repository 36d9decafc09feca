// A performance model for data-parallel training with a ZeRO-1 sharded optimizer (and
// Megatron-style tensor + sequence parallelism inside a node): predicts the step time and the
// scaling efficiency on N GPUs from a single-GPU step profile and the cluster's link speeds.
//
// One step of one model replica (tp GPUs) processes `tokens_per_replica` tokens in
// micro-batches; dp = N / tp replicas run side by side (weak scaling: the global batch grows
// with dp). Per step:
//   compute     tokens_per_replica * seconds_per_token / (tp * tp_compute_efficiency)
//   TP traffic  per micro-batch and layer, `tp_collectives_per_layer` all-gathers /
//               reduce-scatters of the micro-batch's activations (tokens * d * bytes) over the
//               tp GPUs of a node (sequence parallel: 2 AG + 2 RS forward, the same backward);
//               not overlapped with compute
//   DP traffic  reduce-scatter of the gradients (grad_bytes per parameter of the TP shard) and
//               all-gather of the updated weights (param_bytes), both over the dp ranks, in
//               buckets; the reduce-scatter overlaps the last micro-batch's backward and the
//               all-gather the next step's first forward, except for one bucket each
//   optimizer   the single-GPU AdamW time divided by tp * dp (each rank updates its shard)
// Collectives are rings: a reduce-scatter or all-gather of S bytes over p ranks takes
// (p-1)/p * S / B + (p-1) * latency. Inside a node B is the NVLink bus bandwidth; across nodes
// B = min(NVLink, k * NIC bandwidth) for a group with k members per node (NCCL runs one ring
// per NIC rail, so k GPUs of a node drive k NICs) and every ring step pays the network latency.
#pragma once

#include "core/config_file.h"

#include <cstdint>
#include <string>

namespace sambay::sweep {

struct StepProfile {                   // one GPU, measured (or assumed until measured)
  double seconds_per_token = 0;        // forward + backward per token, no communication
  double optimizer_seconds = 0;        // one AdamW update of all parameters
  double params = 0;                   // N
  int64_t d_model = 0, n_layers = 0;   // for the tensor-parallel activation traffic
  double activation_bytes_per_micro_batch = 0;  // activation memory of one micro-batch, tp = 1
};

struct ClusterSpec {
  int64_t gpus_per_node = 8;
  double nvlink_bandwidth = 0;   // bytes/s per GPU, ring bus bandwidth inside a node
  double nvlink_latency = 0;     // s per ring step inside a node
  double network_bandwidth = 0;  // bytes/s per GPU (one NIC per GPU) between nodes
  double network_latency = 0;    // s per ring step between nodes
  double gpu_memory = 0;         // bytes per GPU (for the memory column only)
};

struct ParallelConfig {
  int64_t gpus = 1;
  int64_t tp = 1;                   // tensor + sequence parallel degree, inside one node
  double tokens_per_replica = 0;    // per step
  double micro_batch_tokens = 0;    // micro-batches per step = tokens_per_replica / this
  double grad_bytes = 2;            // per gradient element reduce-scattered
  double param_bytes = 2;           // per weight element all-gathered (bf16)
  double activation_bytes = 2;      // per activation element in TP collectives
  double optimizer_state_bytes = 12;  // per parameter, sharded over dp (fp32 master, m, v)
  int64_t tp_collectives_per_layer = 8;
  double bucket_params = 0;         // 0: Megatron-LM's rule max(4e7, 1e6 * dp)
  bool overlap_grad_reduce = true;
  bool overlap_param_gather = true;
  double tp_compute_efficiency = 1;  // how much of the ideal 1/tp compute time TP achieves
};

struct StepPrediction {
  int64_t gpus = 0, nodes = 0, tp = 0, dp = 0, micro_batches = 0, buckets = 0;
  double compute = 0, tp_comm = 0;            // seconds per step
  double grad_reduce_scatter = 0, param_all_gather = 0;  // whole collectives
  double exposed_dp_comm = 0;                 // the part of those not hidden under compute
  double optimizer = 0, step = 0;
  double tokens_per_s = 0, tokens_per_s_per_gpu = 0;
  // Tokens/s per GPU relative to one GPU stepping the same replica batch alone (above 1 only
  // through the sharded optimizer update).
  double efficiency = 0;
  double comm_efficiency = 0;  // the step's share not spent waiting for communication
  double memory_bytes = 0;  // weights + gradients + optimizer shard + activations, per GPU
};

// The cluster keys of an inputs file's `section` (gpus_per_node, nvlink_bandwidth,
// nvlink_latency, network_bandwidth, network_latency, gpu_memory), each defaulting to the
// ASSUMED H100 values of configs/perf/h100-3.8b.ini.
ClusterSpec cluster_spec_from(const ConfigFile& in, const std::string& section);

// Time of a ring reduce-scatter or all-gather of `bytes` over `ranks` (0 for one rank).
double ring_collective_seconds(double bytes, int64_t ranks, double bandwidth, double latency);

// Throws naming the input when a configuration is impossible (tp not dividing the GPUs or
// larger than a node, non-positive sizes).
StepPrediction predict_step(const StepProfile& profile, const ClusterSpec& cluster,
                            const ParallelConfig& config);

}  // namespace sambay::sweep
