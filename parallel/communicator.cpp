// The MPI and host-staged backends, and the dispatch to NCCL.
#include "parallel/communicator.h"

#include "core/check.h"
#include "core/cuda_runtime.h"
#include "parallel/nccl_backend.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <vector>

namespace sambay {

const char* backend_name(CommBackend b) {
  switch (b) {
    case CommBackend::mpi:
      return "mpi";
    case CommBackend::mpi_host_staged:
      return "mpi_host_staged";
    case CommBackend::nccl:
      return "nccl";
  }
  return "?";
}

void NcclStateDeleter::operator()(NcclState* s) const { nccl_backend::destroy(s); }

namespace {

// The activity record collective_activity() reads (another thread: the watchdog).
std::mutex activity_mutex;
CollectiveActivity activity;

// Marks one call of the public interface as in progress for its lifetime.
class ActivityScope {
 public:
  ActivityScope(const Communicator& c, const char* operation) {
    std::lock_guard lock(activity_mutex);
    activity.active = true;
    activity.operation = operation;
    activity.backend = backend_name(c.backend);
    activity.group = c.name;
    activity.ranks = c.size;
    activity.since = std::chrono::steady_clock::now();
  }
  ~ActivityScope() {
    std::lock_guard lock(activity_mutex);
    activity.active = false;
    activity.since = std::chrono::steady_clock::now();
    ++activity.completed;
  }
  ActivityScope(const ActivityScope&) = delete;
  ActivityScope& operator=(const ActivityScope&) = delete;
};

// MPI has no bf16: it travels as 16-bit integers, reduced by these user operations, which add
// (or compare) in fp32 and round each partial result back to bf16, as NCCL does.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = to_bf16(to_float(a[i]) + to_float(b[i]));
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const bf16* a = static_cast<const bf16*>(in);
  bf16* b = static_cast<bf16*>(inout);
  for (int i = 0; i < *len; ++i)
    if (to_float(a[i]) > to_float(b[i])) b[i] = a[i];
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::bf16:
      return MPI_UINT16_T;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(DType t, ReduceOp op) {
  if (t != DType::bf16) return op == ReduceOp::sum ? MPI_SUM : MPI_MAX;
  // Created once, after MPI_Init (the first bf16 reduction), kept until MPI_Finalize.
  static const MPI_Op sum = [] {
    MPI_Op o;
    MPI_Op_create(bf16_sum, /*commute=*/1, &o);
    return o;
  }();
  static const MPI_Op max = [] {
    MPI_Op o;
    MPI_Op_create(bf16_max, /*commute=*/1, &o);
    return o;
  }();
  return op == ReduceOp::sum ? sum : max;
}

void check_mpi(int err, const Communicator& c, const char* what) {
  if (err == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, text, &len);
  fail("rank {} of group '{}' ({} ranks): {} failed: {}", c.rank, c.name, c.size, what,
       std::string(text, len));
}

void check_count(const Communicator& c, int64_t count, const char* what) {
  if (count < 0 || count > INT_MAX)
    fail("rank {} of group '{}': {} of {} elements per rank: the count must be in [0, {}]", c.rank,
         c.name, what, count, INT_MAX);
}

// Runs fn(offset, n) over [0, count) in pieces MPI's int counts can hold.
template <typename Fn>
void in_chunks(int64_t count, Fn fn) {
  constexpr int64_t kChunk = int64_t(1) << 30;
  for (int64_t off = 0; off < count; off += kChunk) fn(off, int(std::min(kChunk, count - off)));
  if (count == 0) fn(0, 0);
}

const char* at(const void* p, int64_t elements, DType t) {
  return static_cast<const char*>(p) + elements * int64_t(dtype_size(t));
}
char* at(void* p, int64_t elements, DType t) {
  return static_cast<char*>(p) + elements * int64_t(dtype_size(t));
}

// ---- MPI on host buffers ----

void mpi_all_reduce(const Communicator& c, const void* send, void* recv, int64_t count, DType t,
                    ReduceOp op) {
  in_chunks(count, [&](int64_t off, int n) {
    const void* s = send == recv ? MPI_IN_PLACE : at(send, off, t);
    check_mpi(MPI_Allreduce(s, at(recv, off, t), n, mpi_type(t), mpi_op(t, op), c.mpi), c,
              "MPI_Allreduce");
  });
}

void mpi_reduce_scatter(const Communicator& c, const void* send, void* recv, int64_t count, DType t,
                        ReduceOp op) {
  check_count(c, count, "reduce_scatter");
  if (recv == at(send, c.rank * count, t)) {
    // MPI's in-place form leaves the result at the start of the buffer; move it to block rank.
    void* base = const_cast<void*>(send);
    check_mpi(
        MPI_Reduce_scatter_block(MPI_IN_PLACE, base, int(count), mpi_type(t), mpi_op(t, op), c.mpi),
        c, "MPI_Reduce_scatter_block");
    if (count > 0) std::memmove(recv, base, count * dtype_size(t));  // buffers may be null at 0
    return;
  }
  check_mpi(MPI_Reduce_scatter_block(send, recv, int(count), mpi_type(t), mpi_op(t, op), c.mpi), c,
            "MPI_Reduce_scatter_block");
}

void mpi_all_gather(const Communicator& c, const void* send, void* recv, int64_t count, DType t) {
  check_count(c, count, "all_gather");
  const void* s = send == at(recv, c.rank * count, t) ? MPI_IN_PLACE : send;
  check_mpi(MPI_Allgather(s, int(count), mpi_type(t), recv, int(count), mpi_type(t), c.mpi), c,
            "MPI_Allgather");
}

void mpi_broadcast(const Communicator& c, void* buf, int64_t count, DType t, int root) {
  in_chunks(count, [&](int64_t off, int n) {
    check_mpi(MPI_Bcast(at(buf, off, t), n, mpi_type(t), root, c.mpi), c, "MPI_Bcast");
  });
}

constexpr int kPointToPointTag = 7;

void mpi_send(const Communicator& c, const void* buf, int64_t count, DType t, int peer) {
  in_chunks(count, [&](int64_t off, int n) {
    check_mpi(MPI_Send(at(buf, off, t), n, mpi_type(t), peer, kPointToPointTag, c.mpi), c,
              "MPI_Send");
  });
}

void mpi_recv(const Communicator& c, void* buf, int64_t count, DType t, int peer) {
  in_chunks(count, [&](int64_t off, int n) {
    check_mpi(
        MPI_Recv(at(buf, off, t), n, mpi_type(t), peer, kPointToPointTag, c.mpi, MPI_STATUS_IGNORE),
        c, "MPI_Recv");
  });
}

// ---- MPI with host staging: GPU buffers copied through host memory ----

std::vector<char> to_host(const void* device, int64_t count, DType t) {
  std::vector<char> host(count * dtype_size(t));
  if (!host.empty()) cuda_copy_to_host(host.data(), device, host.size());
  return host;
}

// A copy from pageable memory may return before its DMA has landed; the caller's streams do not
// wait for the legacy stream it runs on, so the result is made complete before returning.
void to_device(void* device, const std::vector<char>& host) {
  if (host.empty()) return;
  cuda_copy_to_device(device, host.data(), host.size());
  cuda_stream_synchronize(nullptr);
}

void check_rank(const Communicator& c, int r, const char* what) {
  if (r < 0 || r >= c.size)
    fail("rank {} of group '{}' ({} ranks): {} names rank {}, outside the group", c.rank, c.name,
         c.size, what, r);
}

}  // namespace

Communicator make_communicator(MPI_Comm group, CommBackend backend, const std::string& name,
                               double timeout_s) {
  SAMBAY_CHECK(group != MPI_COMM_NULL, "communicator '{}': the MPI group is MPI_COMM_NULL", name);
  Communicator c;
  c.backend = backend;
  c.mpi = group;
  c.name = name;
  MPI_Comm_rank(group, &c.rank);
  MPI_Comm_size(group, &c.size);
  if (backend == CommBackend::nccl)
    c.nccl.reset(nccl_backend::create(group, c.rank, c.size, name, timeout_s));
  return c;
}

void all_reduce(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                ReduceOp op) {
  const ActivityScope scope(c, "all_reduce");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_all_reduce(c, send, recv, count, type, op);
    case CommBackend::nccl:
      return nccl_backend::all_reduce(c, send, recv, count, type, op);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host = to_host(send, count, type);
      mpi_all_reduce(c, host.data(), host.data(), count, type, op);
      return to_device(recv, host);
    }
  }
}

void reduce_scatter(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                    ReduceOp op) {
  const ActivityScope scope(c, "reduce_scatter");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_reduce_scatter(c, send, recv, count, type, op);
    case CommBackend::nccl:
      return nccl_backend::reduce_scatter(c, send, recv, count, type, op);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host_send = to_host(send, c.size * count, type);
      std::vector<char> host_recv(count * dtype_size(type));
      mpi_reduce_scatter(c, host_send.data(), host_recv.data(), count, type, op);
      return to_device(recv, host_recv);
    }
  }
}

void all_gather(const Communicator& c, const void* send, void* recv, int64_t count, DType type) {
  const ActivityScope scope(c, "all_gather");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_all_gather(c, send, recv, count, type);
    case CommBackend::nccl:
      return nccl_backend::all_gather(c, send, recv, count, type);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host(c.size * count * dtype_size(type));
      if (count > 0)
        cuda_copy_to_host(at(host.data(), c.rank * count, type), send, count * dtype_size(type));
      mpi_all_gather(c, at(host.data(), c.rank * count, type), host.data(), count, type);
      return to_device(recv, host);
    }
  }
}

void broadcast(const Communicator& c, void* buf, int64_t count, DType type, int root) {
  const ActivityScope scope(c, "broadcast");
  check_rank(c, root, "broadcast");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_broadcast(c, buf, count, type, root);
    case CommBackend::nccl:
      return nccl_backend::broadcast(c, buf, count, type, root);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host =
          c.rank == root ? to_host(buf, count, type) : std::vector<char>(count * dtype_size(type));
      mpi_broadcast(c, host.data(), count, type, root);
      return to_device(buf, host);
    }
  }
}

void send(const Communicator& c, const void* buf, int64_t count, DType type, int peer) {
  const ActivityScope scope(c, "send");
  check_rank(c, peer, "send");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_send(c, buf, count, type, peer);
    case CommBackend::nccl:
      return nccl_backend::send(c, buf, count, type, peer);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host = to_host(buf, count, type);
      return mpi_send(c, host.data(), count, type, peer);
    }
  }
}

void recv(const Communicator& c, void* buf, int64_t count, DType type, int peer) {
  const ActivityScope scope(c, "recv");
  check_rank(c, peer, "recv");
  switch (c.backend) {
    case CommBackend::mpi:
      return mpi_recv(c, buf, count, type, peer);
    case CommBackend::nccl:
      return nccl_backend::recv(c, buf, count, type, peer);
    case CommBackend::mpi_host_staged: {
      std::vector<char> host(count * dtype_size(type));
      mpi_recv(c, host.data(), count, type, peer);
      return to_device(buf, host);
    }
  }
}

void barrier(const Communicator& c) {
  wait(c);  // a barrier also means this rank's own enqueued work is done
  const ActivityScope scope(c, "barrier");
  check_mpi(MPI_Barrier(c.mpi), c, "MPI_Barrier");
}

void wait(const Communicator& c) {
  if (c.backend != CommBackend::nccl) return;
  const ActivityScope scope(c, "wait");
  nccl_backend::wait(c);
}

cudaStream_t comm_stream(const Communicator& c) {
  return c.backend == CommBackend::nccl ? nccl_backend::stream(c) : nullptr;
}

double all_reduce_scalar(const Communicator& c, double value, ReduceOp op) {
  const ActivityScope scope(c, "all_reduce (scalar)");
  double out = 0;
  check_mpi(
      MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, op == ReduceOp::sum ? MPI_SUM : MPI_MAX, c.mpi), c,
      "MPI_Allreduce (scalar)");
  return out;
}

void abort_nccl_communicators() { nccl_backend::abort_all(); }

CollectiveActivity collective_activity() {
  std::lock_guard lock(activity_mutex);
  return activity;
}

}  // namespace sambay
