// The NCCL half of the communicator (nccl_backend.cpp in CUDA builds; nccl_backend_none.cpp
// otherwise, whose calls fail saying NCCL is not built in). Internal to parallel/: callers use
// communicator.h, which dispatches here for CommBackend::nccl.
#pragma once

#include "parallel/communicator.h"

namespace sambay::nccl_backend {

// Collective over `group`: rank 0 makes the unique id, MPI broadcasts it, every rank joins
// with its current CUDA device.
NcclState* create(MPI_Comm group, int rank, int size, const std::string& name, double timeout_s);
void destroy(NcclState* state);

void all_reduce(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                ReduceOp op);
void reduce_scatter(const Communicator& c, const void* send, void* recv, int64_t count, DType type,
                    ReduceOp op);
void all_gather(const Communicator& c, const void* send, void* recv, int64_t count, DType type);
void broadcast(const Communicator& c, void* buf, int64_t count, DType type, int root);
void send(const Communicator& c, const void* buf, int64_t count, DType type, int peer);
void recv(const Communicator& c, void* buf, int64_t count, DType type, int peer);
void wait(const Communicator& c);
cudaStream_t stream(const Communicator& c);
void abort_all();

}  // namespace sambay::nccl_backend
