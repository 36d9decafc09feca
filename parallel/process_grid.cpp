#include "parallel/process_grid.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "parallel/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <utility>
#include <vector>

namespace sambay {

namespace {

bool mpi_active() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void check_mpi(int err, const char* what) {
  if (err == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, text, &len);
  fail("process grid: {} failed: {}", what, std::string(text, len));
}

// MPI_Finalize unloads MPI's components; under AddressSanitizer the leak check (otherwise at
// exit) runs first, while their memory can still be traced to them and left out
// (cmake/sanitizer_defaults.cpp).
void finalize_mpi() {
#if defined(__SANITIZE_ADDRESS__)
  __lsan_do_leak_check();
#endif
  MPI_Finalize();
}

// The ranks with the same `color` form one communicator, ordered by `key`.
MPI_Comm split(MPI_Comm parent, int color, int key) {
  MPI_Comm out = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(parent, color, key, &out), "MPI_Comm_split");
  return out;
}

// Every rank's host name, in world-rank order (collective over `comm`).
std::vector<std::string> all_hosts(MPI_Comm comm) {
  constexpr int kRecord = 128;
  char mine[kRecord] = {};
  gethostname(mine, kRecord - 1);
  int size = 0;
  MPI_Comm_size(comm, &size);
  std::vector<char> all(static_cast<size_t>(kRecord) * size);
  check_mpi(MPI_Allgather(mine, kRecord, MPI_CHAR, all.data(), kRecord, MPI_CHAR, comm),
            "MPI_Allgather (host names)");
  std::vector<std::string> hosts(size);
  for (int r = 0; r < size; ++r) hosts[r] = all.data() + static_cast<size_t>(r) * kRecord;
  return hosts;
}

// "0-3" for consecutive ranks, else "0,2,5".
std::string rank_list(const std::vector<int>& rk) {
  const bool contiguous = rk.back() - rk.front() + 1 == static_cast<int>(rk.size());
  return contiguous && rk.size() > 1 ? fmt::format("{}-{}", rk.front(), rk.back())
                                     : fmt::format("{}", fmt::join(rk, ","));
}

}  // namespace

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
  int provided = 0;
#if defined(__SANITIZE_ADDRESS__)
  // What MPI allocates while it starts is its own (some of it in components it unloads again
  // at once, where LeakSanitizer could no longer trace it): not checked for leaks.
  __lsan_disable();
#endif
  const int started = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
#if defined(__SANITIZE_ADDRESS__)
  __lsan_enable();
#endif
  if (started != MPI_SUCCESS) fail("MPI_Init_thread failed");
  owns_ = true;
}

MpiSession::~MpiSession() {
  if (owns_ && std::uncaught_exceptions() == 0 && mpi_active()) finalize_mpi();
}

int report_fatal_error(const std::string& message, int exit_code) {
  int rank = 0, size = 1;
  const bool active = mpi_active();
  if (active) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  if (size > 1)
    fmt::print(stderr, "sambay: rank {} of {}: {}\n", rank, size, message);
  else
    fmt::print(stderr, "sambay: {}\n", message);
  std::fflush(stderr);
  if (size > 1) {
    abort_nccl_communicators();
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
  if (active) finalize_mpi();  // a single rank has no one to wait for
  return exit_code;
}

GridShape resolve_grid_shape(int world_size, int tp, int cp) {
  if (tp < 1) fail("tensor-parallel size (tp) must be >= 1, got {}", tp);
  if (cp < 1) fail("context-parallel size (cp) must be >= 1, got {}", cp);
  if (world_size < 1) fail("world size must be >= 1, got {}", world_size);
  if (world_size % (tp * cp) != 0)
    fail("world size {} is not divisible by tp {} x cp {} = {}: launch a multiple of {} ranks",
         world_size, tp, cp, tp * cp, tp * cp);
  return GridShape{world_size / (tp * cp), cp, tp};
}

GridCoords grid_coords(int world_rank, const GridShape& s) {
  SAMBAY_CHECK(world_rank >= 0 && world_rank < s.world(), "rank {} outside a world of {}",
               world_rank, s.world());
  return GridCoords{world_rank / (s.cp * s.tp), (world_rank / s.tp) % s.cp, world_rank % s.tp};
}

int grid_rank(const GridCoords& c, const GridShape& s) {
  SAMBAY_CHECK(c.dp >= 0 && c.dp < s.dp && c.cp >= 0 && c.cp < s.cp && c.tp >= 0 && c.tp < s.tp,
               "coordinates (dp {}, cp {}, tp {}) outside the grid dp {} x cp {} x tp {}", c.dp,
               c.cp, c.tp, s.dp, s.cp, s.tp);
  return (c.dp * s.cp + c.cp) * s.tp + c.tp;
}

std::string tp_placement_error(const GridShape& s, const std::vector<int>& node,
                               const std::vector<std::string>& host) {
  SAMBAY_CHECK(static_cast<int>(node.size()) == s.world() && host.size() == node.size(),
               "placement of {} ranks ({} host names) for a world of {}", node.size(), host.size(),
               s.world());
  if (s.tp == 1) return "";
  // Ranks per node, nodes in order of their first rank.
  std::vector<int> ids, counts;
  std::vector<std::string> names;
  for (int r = 0; r < s.world(); ++r) {
    const auto it = std::find(ids.begin(), ids.end(), node[r]);
    if (it != ids.end()) {
      ++counts[it - ids.begin()];
    } else {
      ids.push_back(node[r]), counts.push_back(1), names.push_back(host[r]);
    }
  }
  const auto fewest = std::min_element(counts.begin(), counts.end());
  const bool uniform = std::equal(counts.begin() + 1, counts.end(), counts.begin());
  const std::string per_node =
      uniform ? fmt::format("{} nodes of {} ranks", counts.size(), counts[0])
              : fmt::format("ranks per node: {}", fmt::join(counts, ","));
  if (s.tp > *fewest)
    return fmt::format(
        "tensor-parallel size (tp) {} is larger than the {} rank{} on node {} ({}): a TP group "
        "must sit on one node; use tp <= {} or start at least {} ranks per node",
        s.tp, *fewest, *fewest == 1 ? "" : "s", names[fewest - counts.begin()], per_node,
        *fewest, s.tp);
  for (int first = 0; first < s.world(); first += s.tp) {
    std::vector<int> group;
    std::vector<std::string> where;
    for (int r = first; r < first + s.tp; ++r) {
      group.push_back(r);
      if (node[r] != node[first] && std::find(where.begin(), where.end(), host[r]) == where.end())
        where.push_back(host[r]);
    }
    if (!where.empty())
      return fmt::format(
          "the tensor-parallel group of ranks {} spans nodes {} and {} ({}): with tp {} every "
          "node needs a multiple of {} ranks, placed consecutively (mpirun --map-by slot, "
          "srun's default block distribution)",
          rank_list(group), host[first], fmt::join(where, ", "), per_node, s.tp, s.tp);
  }
  return "";
}

ProcessGrid::ProcessGrid(ProcessGrid&& o) noexcept
    : world_rank(o.world_rank),
      world_size(o.world_size),
      local_rank(o.local_rank),
      local_size(o.local_size),
      gpu(o.gpu),
      shape(o.shape),
      coords(o.coords),
      world(std::exchange(o.world, MPI_COMM_NULL)),
      node(std::exchange(o.node, MPI_COMM_NULL)),
      dp(std::exchange(o.dp, MPI_COMM_NULL)),
      cp(std::exchange(o.cp, MPI_COMM_NULL)),
      tp(std::exchange(o.tp, MPI_COMM_NULL)),
      dp_cp(std::exchange(o.dp_cp, MPI_COMM_NULL)) {}

ProcessGrid::~ProcessGrid() {
  if (std::uncaught_exceptions() > 0 || !mpi_active()) return;
  for (MPI_Comm* c : {&dp_cp, &tp, &cp, &dp, &node, &world})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

ProcessGrid make_process_grid(int tp, int cp) {
  if (!mpi_active())
    fail("the process grid needs MPI: construct an MpiSession before make_process_grid");
  ProcessGrid g;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &g.world), "MPI_Comm_dup");
  // Errors come back as codes (thrown with the rank and cause) instead of MPI's own abort;
  // communicators split from this one inherit the handler.
  MPI_Comm_set_errhandler(g.world, MPI_ERRORS_RETURN);
  MPI_Comm_rank(g.world, &g.world_rank);
  MPI_Comm_size(g.world, &g.world_size);
  g.shape = resolve_grid_shape(g.world_size, tp, cp);  // the same verdict on every rank
  g.coords = grid_coords(g.world_rank, g.shape);

  check_mpi(
      MPI_Comm_split_type(g.world, MPI_COMM_TYPE_SHARED, g.world_rank, MPI_INFO_NULL, &g.node),
      "MPI_Comm_split_type");
  MPI_Comm_rank(g.node, &g.local_rank);
  MPI_Comm_size(g.node, &g.local_size);
  const int gpus = cuda_device_count();
  g.gpu = gpus > 0 ? g.local_rank % gpus : -1;

  const GridShape& s = g.shape;
  const GridCoords& c = g.coords;
  g.tp = split(g.world, c.dp * s.cp + c.cp, c.tp);
  g.cp = split(g.world, c.dp * s.tp + c.tp, c.cp);
  g.dp = split(g.world, c.cp * s.tp + c.tp, c.dp);
  g.dp_cp = split(g.world, c.tp, c.dp * s.cp + c.cp);

  // A TP group must sit on one node. Node id = lowest world rank on the node (MPI's notion of
  // a node: the ranks that can share memory); every rank sees every rank's node and host, so
  // all of them reach the same verdict and fail together.
  int node_id = g.world_rank;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &node_id, 1, MPI_INT, MPI_MIN, g.node), "MPI_Allreduce");
  std::vector<int> nodes(g.world_size);
  check_mpi(MPI_Allgather(&node_id, 1, MPI_INT, nodes.data(), 1, MPI_INT, g.world),
            "MPI_Allgather (nodes)");
  const std::string problem = tp_placement_error(s, nodes, all_hosts(g.world));
  if (!problem.empty()) fail("{}", problem);
  return g;
}

std::string describe(const ProcessGrid& g) {
  return fmt::format(
      "world {} = dp {} x cp {} x tp {}; rank {} is (dp {}, cp {}, tp {}), local "
      "rank {} of {} on its node{}",
      g.world_size, g.shape.dp, g.shape.cp, g.shape.tp, g.world_rank, g.coords.dp, g.coords.cp,
      g.coords.tp, g.local_rank, g.local_size, g.gpu >= 0 ? fmt::format(", GPU {}", g.gpu) : "");
}

std::string describe_placement(const ProcessGrid& g) {
  const std::vector<std::string> hosts = all_hosts(g.world);
  std::vector<int> gpu_of(g.world_size);
  check_mpi(MPI_Gather(&g.gpu, 1, MPI_INT, gpu_of.data(), 1, MPI_INT, 0, g.world),
            "MPI_Gather (placement)");
  if (g.world_rank != 0) return {};
  // Nodes in order of their first rank; per node its ranks and GPUs.
  std::vector<std::string> nodes;
  std::vector<std::vector<int>> ranks, gpus;
  for (int r = 0; r < g.world_size; ++r) {
    auto it = std::find(nodes.begin(), nodes.end(), hosts[r]);
    size_t i = static_cast<size_t>(it - nodes.begin());
    if (it == nodes.end()) nodes.push_back(hosts[r]), ranks.emplace_back(), gpus.emplace_back();
    ranks[i].push_back(r);
    if (gpu_of[r] >= 0) gpus[i].push_back(gpu_of[r]);
  }
  std::string out;
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* list = std::getenv("SLURM_JOB_NODELIST");
    out += fmt::format("Slurm job {} on {}\n", job, list ? list : "?");
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    out += fmt::format("{}: {} {}", nodes[i], ranks[i].size() == 1 ? "rank" : "ranks",
                       rank_list(ranks[i]));
    out += gpus[i].empty() ? ", no GPU\n" : fmt::format(", GPUs {}\n", fmt::join(gpus[i], ","));
  }
  return out;
}

}  // namespace sambay
