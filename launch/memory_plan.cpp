#include "launch/memory_plan.h"

#include "core/param_layout.h"
#include "parallel/data_parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <string>

namespace sambay {

namespace {

double sum(const std::vector<MemoryItem>& items) {
  double s = 0;
  for (const MemoryItem& i : items) s += i.bytes;
  return s;
}

std::string gib(double bytes) { return fmt::format("{:.2f}", bytes / double(1 << 30)); }

std::string describe(const char* where, const std::vector<MemoryItem>& items) {
  std::string parts;
  for (const MemoryItem& i : items)
    if (i.bytes > 0) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", i.what, gib(i.bytes));
  return fmt::format("{} {} GiB ({})", where, gib(sum(items)), parts);
}

// A line of a /proc file such as "VmHWM:   123456 kB", in bytes.
double proc_kib(const char* file, const char* key) {
  std::ifstream f(file);
  std::string line;
  const std::string prefix = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(prefix, 0) == 0) return std::stod(line.substr(prefix.size())) * 1024.0;
  return 0;
}

}  // namespace

double RankMemoryPlan::host_bytes() const { return sum(host); }
double RankMemoryPlan::device_bytes() const { return sum(device); }

RankMemoryPlan plan_rank_memory(const MemoryPlanInputs& in) {
  const ModelConfig shard_config = in.tp > 1 ? tensor_parallel_config(in.model, in.tp) : in.model;
  const ParamLayout shard = build_param_layout(shard_config);
  const double n = double(shard.total);
  // The GPU engine gives one rank a single bucket; the pieces' lengths do not depend on it.
  const ShardLayout zero = make_shard_layout(
      shard.total, in.zero_ranks > 1 ? in.bucket_values : std::max<int64_t>(1, shard.total),
      in.zero_ranks, 0);
  const double s = double(zero.shard_size);
  int64_t largest = 0;
  for (const ParamSpec& p : shard.params) largest = std::max(largest, p.numel);
  RankMemoryPlan plan;
  plan.owned_bytes = 12 * s;
  const MemoryItem snapshot{in.async_save ? "checkpoint snapshot (weights, m, v)"
                                          : "checkpoint snapshot (weights)",
                            (in.async_save || in.gpu ? 12 : 4) * s};
  // The padded copy of one bucket that a reduce-scatter or all-gather goes through.
  const double staging =
      in.zero_ranks > 1 ? 4.0 * double(zero.buckets.front().piece) * in.zero_ranks : 0;
  if (!in.gpu) {
    plan.host = {{"weights", 4 * n},
                 {"gradients", 4 * n},
                 {"reduced gradient shard", 4 * s},
                 {"AdamW m, v", 8 * s},
                 {"gradient bucket", staging},
                 {"activations", in.activation_bytes},
                 snapshot};
    return plan;
  }
  plan.device = {{"weights fp32 + bf16", 6 * n},
                 {"gradients", 4 * n},
                 {"AdamW m, v", 8 * s},
                 {"activations", in.activation_bytes},
                 {"gradient bucket", staging}};
  // The snapshot exists from the first save on; while the run starts, one tensor is staged on
  // its way to the device and a resume reads the owned moments before uploading them (they are
  // not held together, so the larger counts).
  const double startup = 4.0 * double(largest) + 8 * s;
  plan.host = {snapshot.bytes >= startup
                   ? snapshot
                   : MemoryItem{"startup staging (largest tensor, owned moments)", startup}};
  plan.host[0].what += " (pinned)";
  return plan;
}

std::vector<std::string> describe_memory_plan(const RankMemoryPlan& plan) {
  std::vector<std::string> lines = {describe("host", plan.host)};
  if (!plan.device.empty()) lines.push_back(describe("device", plan.device));
  return lines;
}

double resident_bytes() { return proc_kib("/proc/self/status", "VmRSS"); }
double peak_resident_bytes() { return proc_kib("/proc/self/status", "VmHWM"); }
double host_memory_total() { return proc_kib("/proc/meminfo", "MemTotal"); }

}  // namespace sambay
