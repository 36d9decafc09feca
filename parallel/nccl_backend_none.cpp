// Build without CUDA: the NCCL backend exists so that callers link, and fails clearly if chosen.
#include "core/check.h"
#include "parallel/nccl_backend.h"

namespace sambay::nccl_backend {

namespace {
[[noreturn]] void no_nccl(const std::string& name) {
  fail(
      "communicator '{}': the nccl backend needs a CUDA build of sambay (configure with "
      "SAMBAY_CUDA=ON on a machine with nvcc and NCCL); use mpi or mpi_host_staged",
      name);
}
}  // namespace

NcclState* create(MPI_Comm, int, int, const std::string& name, double) { no_nccl(name); }
void destroy(NcclState*) {}  // nothing can have been created
void all_reduce(const Communicator& c, const void*, void*, int64_t, DType, ReduceOp) {
  no_nccl(c.name);
}
void reduce_scatter(const Communicator& c, const void*, void*, int64_t, DType, ReduceOp) {
  no_nccl(c.name);
}
void all_gather(const Communicator& c, const void*, void*, int64_t, DType) { no_nccl(c.name); }
void broadcast(const Communicator& c, void*, int64_t, DType, int) { no_nccl(c.name); }
void send(const Communicator& c, const void*, int64_t, DType, int) { no_nccl(c.name); }
void recv(const Communicator& c, void*, int64_t, DType, int) { no_nccl(c.name); }
void wait(const Communicator& c) { no_nccl(c.name); }
cudaStream_t stream(const Communicator& c) { no_nccl(c.name); }
void abort_all() {}

}  // namespace sambay::nccl_backend
