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

  // A TP group must sit on one node. Node id = lowest world rank on the node; every rank
  // learns whether any TP group spans nodes, so all of them fail together.
  int node_id = g.world_rank, lo = 0, hi = 0, spans = 0, any_spans = 0;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &node_id, 1, MPI_INT, MPI_MIN, g.node), "MPI_Allreduce");
  check_mpi(MPI_Allreduce(&node_id, &lo, 1, MPI_INT, MPI_MIN, g.tp), "MPI_Allreduce");
  check_mpi(MPI_Allreduce(&node_id, &hi, 1, MPI_INT, MPI_MAX, g.tp), "MPI_Allreduce");
  spans = lo != hi;
  check_mpi(MPI_Allreduce(&spans, &any_spans, 1, MPI_INT, MPI_MAX, g.world), "MPI_Allreduce");
  if (any_spans)
    fail(
        "a tensor-parallel group of {} ranks spans nodes: place consecutive ranks on one node "
        "(mpirun --map-by slot, srun's default block distribution) with a multiple of {} ranks "
        "per node",
        s.tp, s.tp);
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
  // Each rank contributes "host gpu" in a fixed-size record.
  constexpr int kRecord = 128;
  char mine[kRecord] = {};
  char host[kRecord - 16] = {};
  gethostname(host, sizeof host - 1);
  std::snprintf(mine, sizeof mine, "%s %d", host, g.gpu);
  std::vector<char> all(static_cast<size_t>(kRecord) * g.world_size);
  check_mpi(MPI_Gather(mine, kRecord, MPI_CHAR, all.data(), kRecord, MPI_CHAR, 0, g.world),
            "MPI_Gather (placement)");
  if (g.world_rank != 0) return {};
  // Nodes in order of their first rank; per node its ranks and GPUs.
  std::vector<std::string> nodes;
  std::vector<std::vector<int>> ranks, gpus;
  for (int r = 0; r < g.world_size; ++r) {
    char name[kRecord] = {};
    int gpu = -1;
    std::sscanf(all.data() + static_cast<size_t>(r) * kRecord, "%127s %d", name, &gpu);
    auto it = std::find(nodes.begin(), nodes.end(), std::string(name));
    size_t i = static_cast<size_t>(it - nodes.begin());
    if (it == nodes.end()) nodes.emplace_back(name), ranks.emplace_back(), gpus.emplace_back();
    ranks[i].push_back(r);
    if (gpu >= 0) gpus[i].push_back(gpu);
  }
  std::string out;
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    const char* list = std::getenv("SLURM_JOB_NODELIST");
    out += fmt::format("Slurm job {} on {}\n", job, list ? list : "?");
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    const std::vector<int>& rk = ranks[i];
    const bool contiguous = rk.back() - rk.front() + 1 == static_cast<int>(rk.size());
    out += fmt::format("{}: {} {}", nodes[i], rk.size() == 1 ? "rank" : "ranks",
                       contiguous && rk.size() > 1 ? fmt::format("{}-{}", rk.front(), rk.back())
                                                   : fmt::format("{}", fmt::join(rk, ",")));
    out += gpus[i].empty() ? ", no GPU\n" : fmt::format(", GPUs {}\n", fmt::join(gpus[i], ","));
  }
  return out;
}

}  // namespace sambay
