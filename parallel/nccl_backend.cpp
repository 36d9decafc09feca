// NCCL communicators for GPU buffers: created from a unique id broadcast over MPI, collectives
// enqueued on the communicator's own non-blocking stream, and a wait that cannot hang: it
// polls the stream and NCCL's asynchronous error, and past the timeout aborts the communicator
// and throws (the top level then ends the job with MPI_Abort).
#include "parallel/nccl_backend.h"

#include "core/check.h"
#include "core/cuda_check.h"

#include <nccl.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

namespace sambay {

struct NcclState {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  double timeout_s = 600;
  bool aborted = false;
};

namespace nccl_backend {

namespace {

// Live communicators, so that a fatal error anywhere can abort them all before MPI_Abort.
std::mutex live_mutex;
std::set<NcclState*> live;

void check_nccl(ncclResult_t r, const Communicator& c, const char* what) {
  if (r == ncclSuccess) return;
  fail("rank {} of group '{}' ({} ranks): {} failed: {} ({})", c.rank, c.name, c.size, what,
       ncclGetErrorString(r), ncclGetLastError(c.nccl ? c.nccl->comm : nullptr));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::sum ? ncclSum : ncclMax; }

const NcclState& state(const Communicator& c) {
  SAMBAY_CHECK(c.nccl, "communicator '{}' has no NCCL state", c.name);
  SAMBAY_CHECK(!c.nccl->aborted, "communicator '{}' was aborted after an earlier error", c.name);
  return *c.nccl;
}

}  // namespace

NcclState* create(MPI_Comm group, int rank, int size, const std::string& name, double timeout_s) {
  ncclUniqueId id{};
  if (rank == 0 && ncclGetUniqueId(&id) != ncclSuccess)
    fail("communicator '{}': ncclGetUniqueId failed on rank 0", name);
  if (MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group) != MPI_SUCCESS)
    fail("communicator '{}': broadcasting the NCCL unique id failed on rank {}", name, rank);
  auto s = std::make_unique<NcclState>();
  s->timeout_s = timeout_s;
  const ncclResult_t r = ncclCommInitRank(&s->comm, size, id, rank);
  if (r != ncclSuccess)
    fail("rank {} of group '{}' ({} ranks): ncclCommInitRank failed: {} ({})", rank, name, size,
         ncclGetErrorString(r), ncclGetLastError(nullptr));
  SAMBAY_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
  std::lock_guard lock(live_mutex);
  live.insert(s.get());
  return s.release();
}

void destroy(NcclState* s) {
  if (!s) return;
  {
    std::lock_guard lock(live_mutex);
    live.erase(s);
  }
  if (!s->aborted) ncclCommDestroy(s->comm);
  cudaStreamDestroy(s->stream);
  delete s;
}

void all_reduce(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                ReduceOp op) {
  const NcclState& s = state(c);
  check_nccl(ncclAllReduce(send, recv, count, nccl_type(type), nccl_op(op), s.comm, s.stream), c,
             "ncclAllReduce");
}

void reduce_scatter(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                    ReduceOp op) {
  const NcclState& s = state(c);
  check_nccl(ncclReduceScatter(send, recv, count, nccl_type(type), nccl_op(op), s.comm, s.stream),
             c, "ncclReduceScatter");
}

void all_gather(const Communicator& c, const void* send, void* recv, int64_t count, DType type) {
  const NcclState& s = state(c);
  check_nccl(ncclAllGather(send, recv, count, nccl_type(type), s.comm, s.stream), c,
             "ncclAllGather");
}

void broadcast(const Communicator& c, void* buf, int64_t count, DType type, int root) {
  const NcclState& s = state(c);
  check_nccl(ncclBroadcast(buf, buf, count, nccl_type(type), root, s.comm, s.stream), c,
             "ncclBroadcast");
}

void send(const Communicator& c, const void* buf, int64_t count, DType type, int peer) {
  const NcclState& s = state(c);
  check_nccl(ncclSend(buf, count, nccl_type(type), peer, s.comm, s.stream), c, "ncclSend");
}

void recv(const Communicator& c, void* buf, int64_t count, DType type, int peer) {
  const NcclState& s = state(c);
  check_nccl(ncclRecv(buf, count, nccl_type(type), peer, s.comm, s.stream), c, "ncclRecv");
}

void wait(const Communicator& c) {
  state(c);  // checks it exists and is usable
  NcclState& s = *c.nccl;
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    const cudaError_t q = cudaStreamQuery(s.stream);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) SAMBAY_CUDA_CHECK(q);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(s.comm, &async);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (async != ncclSuccess || waited > s.timeout_s) {
      ncclCommAbort(s.comm);
      s.aborted = true;
      if (async != ncclSuccess)
        fail("rank {} of group '{}' ({} ranks): NCCL reported an error: {}", c.rank, c.name, c.size,
             ncclGetErrorString(async));
      fail(
          "rank {} of group '{}' ({} ranks): NCCL operations did not finish within {} s (a "
          "peer failed or took another path); communicator aborted",
          c.rank, c.name, c.size, s.timeout_s);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

cudaStream_t stream(const Communicator& c) { return state(c).stream; }

void abort_all() {
  std::lock_guard lock(live_mutex);
  for (NcclState* s : live)
    if (!s->aborted) {
      ncclCommAbort(s->comm);
      s->aborted = true;
    }
}

}  // namespace nccl_backend
}  // namespace sambay
