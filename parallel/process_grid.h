// The process grid: how the ranks of a job are arranged for data, context and tensor
// parallelism, and the MPI sub-communicators of each group.
//
// world = DP x CP x TP, TP varying fastest:
//   world_rank = (dp_rank * cp + cp_rank) * tp + tp_rank
// so a TP group is tp consecutive ranks (placed on one node by mpirun's and srun's default
// block distribution: TP needs the fastest links), a CP group is cp ranks at stride tp, and a
// DP group is dp ranks at stride cp * tp. Ranks of one DP group hold the same parameter shards
// and split the batch; with CP the gradients are also summed over the CP ranks, so the dp_cp
// group (all ranks with the same tp_rank) is the gradient reduction group.
//
// MPI starts the job: under mpirun or srun, every rank runs the same program. The local rank
// (position among the ranks on this node) comes from MPI_Comm_split_type(SHARED); rank i of a
// node uses GPU i % (GPUs on the node), so ranks may share a GPU in tests.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace sambay {

// MPI for the lifetime of the object: initialises MPI unless something (a test's main)
// already has, and finalises it on destruction if it initialised it. While an exception is
// unwinding it does not finalise: other ranks may be waiting in a collective, and
// MPI_Finalize could then wait for ever; report_fatal_error ends the job instead.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

// Prints "sambay: rank R of N: <message>" (or "sambay: <message>" for a single process) to
// stderr. When MPI runs with more than one rank it then aborts every NCCL communicator and the
// whole job (MPI_Abort with exit_code), so that no rank waits for ever on one that failed;
// otherwise it returns exit_code for main to return.
int report_fatal_error(const std::string& message, int exit_code);

struct GridShape {
  int dp = 1, cp = 1, tp = 1;
  int world() const { return dp * cp * tp; }
};

struct GridCoords {
  int dp = 0, cp = 0, tp = 0;
};

// dp = world_size / (cp * tp). Throws naming the sizes when they do not divide.
GridShape resolve_grid_shape(int world_size, int tp, int cp);
// The coordinates of a world rank, and back (the layout above).
GridCoords grid_coords(int world_rank, const GridShape& shape);
int grid_rank(const GridCoords& coords, const GridShape& shape);

// Whether the ranks' placement can hold tensor parallelism: every TP group (shape.tp consecutive
// world ranks) must sit on one node, whose fast links TP's per-layer collectives need. node[r]
// identifies the node of world rank r and host[r] names it (for the message). Returns "" when
// the placement works, else the error: a TP size above a node's rank count names both, a group
// split by the rank order names its ranks and nodes.
std::string tp_placement_error(const GridShape& shape, const std::vector<int>& node,
                               const std::vector<std::string>& host);

struct ProcessGrid {
  int world_rank = 0, world_size = 1;
  int local_rank = 0, local_size = 1;  // among the ranks on this node
  int gpu = -1;                        // CUDA device of this rank; -1 without a GPU
  GridShape shape;
  GridCoords coords;
  // Sub-communicators (owned; MPI error handler: errors return and are thrown as sambay::Error).
  MPI_Comm world = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD
  MPI_Comm node = MPI_COMM_NULL;   // ranks on this node
  MPI_Comm dp = MPI_COMM_NULL, cp = MPI_COMM_NULL, tp = MPI_COMM_NULL;
  MPI_Comm dp_cp = MPI_COMM_NULL;  // dp x cp ranks with this tp_rank: gradient reduction

  ProcessGrid() = default;
  ProcessGrid(const ProcessGrid&) = delete;
  ProcessGrid& operator=(const ProcessGrid&) = delete;
  ProcessGrid(ProcessGrid&& other) noexcept;
  ProcessGrid& operator=(ProcessGrid&&) = delete;
  ~ProcessGrid();  // frees the communicators (not while an exception unwinds: see MpiSession)
};

// Builds the grid over MPI_COMM_WORLD (collective over all ranks; MPI must be initialised).
// Selects this rank's GPU (cudaSetDevice) when the node has one. Throws on every rank when world
// size is not divisible by tp * cp, or when a TP group would span nodes (tp_placement_error).
ProcessGrid make_process_grid(int tp, int cp);

// One line for logs: "world 4 = dp 2 x cp 1 x tp 2, 4 ranks on this node".
std::string describe(const ProcessGrid& grid);

// Where every rank runs, for the start of a job's log (collective; the text is complete on
// rank 0): one line per node, "node-a: ranks 0-3, GPUs 0,1,2,3", prefixed by the Slurm job id
// and node list when the job runs under Slurm.
std::string describe_placement(const ProcessGrid& grid);

}  // namespace sambay
