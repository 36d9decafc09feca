// One communication interface for every parallel group, with three backends:
//   mpi              CPU buffers, MPI collectives;
//   mpi_host_staged  GPU buffers copied to the host, reduced with MPI, copied back: slow, but
//                    lets several ranks share one GPU (tests of parallel layouts on one GPU);
//   nccl             GPU buffers, NCCL collectives on the communicator's own CUDA stream.
//
// Buffers hold f32, f64, bf16, i32 or i64 values (core/tensor.h DType); bf16 is reduced in
// fp32 with each partial result rounded to bf16, as NCCL does. Counts are elements.
// Calls follow NCCL's conventions, whichever the backend:
//   all_reduce      send [count] -> recv [count] on every rank; send == recv is in place.
//   reduce_scatter  send [size * count] -> recv [count]: rank r gets the reduction of block r;
//                   recv == send + rank * count is in place.
//   all_gather      send [count] -> recv [size * count]: block r is rank r's send;
//                   send == recv + rank * count is in place.
//   broadcast       buf [count] of root -> buf of every rank.
//   send / recv     buf [count] to / from one peer (blocking on the MPI backends).
// The MPI backends return when the result is in place. NCCL calls only enqueue work on
// comm.nccl's stream and return at once: call wait(comm) before the host reads the result or
// reuses a buffer on another stream. wait() gives up after the communicator's timeout (a
// peer that died or diverged), aborts the NCCL communicator and throws naming the rank.
//
// Every failure throws sambay::Error naming the group, rank and operation; the top level turns
// it into report_fatal_error, which ends the whole job rather than leaving peers waiting.
#pragma once

#include "core/cuda_stream.h"
#include "core/tensor.h"  // DType, dtype_of, dtype_size

#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace sambay {

enum class CommBackend { mpi, mpi_host_staged, nccl };
enum class ReduceOp { sum, max };

const char* backend_name(CommBackend b);

// NCCL state (communicator, stream, timeout); defined only where NCCL is compiled in.
struct NcclState;
struct NcclStateDeleter {
  void operator()(NcclState* s) const;
};

struct Communicator {
  CommBackend backend = CommBackend::mpi;
  MPI_Comm mpi = MPI_COMM_NULL;  // the group (not owned; the ProcessGrid owns it)
  int rank = 0, size = 1;
  std::string name;  // group name for messages: "dp", "tp", "world", ...
  std::unique_ptr<NcclState, NcclStateDeleter> nccl;  // backend nccl only
};

// A communicator over the ranks of `group`. For nccl (collective over the group): rank 0's
// ncclUniqueId is broadcast over MPI, every rank joins on its current CUDA device, and a
// non-blocking stream is created for the collectives; wait() times out after timeout_s.
Communicator make_communicator(MPI_Comm group, CommBackend backend, const std::string& name,
                               double timeout_s = 600);

void all_reduce(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                ReduceOp op);
void reduce_scatter(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                    ReduceOp op);
void all_gather(const Communicator& c, const void* send, void* recv, int64_t count, DType type);
void broadcast(const Communicator& c, void* buf, int64_t count, DType type, int root);
void send(const Communicator& c, const void* buf, int64_t count, DType type, int peer);
void recv(const Communicator& c, void* buf, int64_t count, DType type, int peer);
void barrier(const Communicator& c);
// Blocks until the communicator's enqueued operations are done (nccl); a no-op for MPI.
void wait(const Communicator& c);

// The CUDA stream the nccl backend runs on (nullptr for the MPI backends).
cudaStream_t comm_stream(const Communicator& c);

// Typed in-place shorthands.
template <typename T>
void all_reduce(const Communicator& c, T* data, int64_t count, ReduceOp op = ReduceOp::sum) {
  all_reduce(c, data, data, count, dtype_of<T>(), op);
}
// One value, summed (or max) over the group; MPI backends only (host scalar).
double all_reduce_scalar(const Communicator& c, double value, ReduceOp op = ReduceOp::sum);

// Aborts every live NCCL communicator of this process (used before MPI_Abort).
void abort_nccl_communicators();

// What this process's communication is doing, for the watchdog (parallel/watchdog.h): the
// operation the calling thread is blocked in, or the last one that returned. Every call above
// records itself (for nccl, wait() is where a host blocks).
struct CollectiveActivity {
  bool active = false;    // inside an operation now
  std::string operation;  // "all_reduce", "wait", ...
  std::string backend;    // backend_name()
  std::string group;      // the communicator's name
  int ranks = 0;          // its size
  std::chrono::steady_clock::time_point since;  // when it began (active) or ended
  int64_t completed = 0;  // operations returned so far
};
CollectiveActivity collective_activity();

}  // namespace sambay
