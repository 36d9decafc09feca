// Memory per rank, planned from the config and the layout before anything is allocated: what
// the start of a run prints, and what `sambay train --dry_run` checks.
//
// A rank holds the TP shard of the weights and owns a ZeRO piece of the optimizer
// (parallel/data_parallel.h). On the CPU backend everything is host memory. On the GPU the model,
// gradients, moments and activations are device memory; the host holds only the checkpoint
// snapshot of the owned values (pinned) and, while a run starts, one tensor at a time on its way
// to the device (and, resuming, the owned moments).
#pragma once

#include "core/model_config.h"

#include <cstdint>
#include <string>
#include <vector>

namespace sambay {

struct MemoryItem {
  std::string what;
  double bytes = 0;
};

struct RankMemoryPlan {
  std::vector<MemoryItem> host, device;  // device: empty on the CPU backend
  double owned_bytes = 0;  // the checkpoint state this rank owns: weights, m and v of its pieces
  double host_bytes() const;
  double device_bytes() const;
};

struct MemoryPlanInputs {
  ModelConfig model;           // the whole model
  int tp = 1;                  // tensor-parallel ranks
  int zero_ranks = 1;          // ranks sharing the optimizer (dp x cp)
  int64_t bucket_values = 0;   // values per gradient bucket
  bool gpu = false;
  bool async_save = true;      // the snapshot also holds the moments
  double activation_bytes = 0;  // of one micro-batch with the chosen recompute
};

// The largest rank's plan (ZeRO rank 0 owns the longest pieces).
RankMemoryPlan plan_rank_memory(const MemoryPlanInputs& in);

// "host 1.23 GiB (weights 0.50, gradients 0.50, ...)" and the device line, for the log.
std::vector<std::string> describe_memory_plan(const RankMemoryPlan& plan);

// This process's resident memory now and at its peak (Linux: /proc/self/status VmRSS, VmHWM),
// in bytes; 0 where unknown.
double resident_bytes();
double peak_resident_bytes();
// This machine's physical memory (/proc/meminfo MemTotal) in bytes; 0 where unknown.
double host_memory_total();

}  // namespace sambay
