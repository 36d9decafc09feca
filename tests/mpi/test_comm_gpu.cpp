// The communicator on GPU buffers (skips without a GPU), under mpirun with 1 or 2 ranks:
//  - MPI with host staging, with every rank on the same GPU (how parallel layouts are tested
//    on one GPU);
//  - NCCL with one rank per communicator (MPI_COMM_SELF: ranks sharing a GPU cannot share an
//    NCCL communicator);
//  - NCCL across the ranks, where the node has a GPU per rank.
#include "parallel/communicator.h"
#include "parallel/process_grid.h"
#include "tests/gpu_buffer.h"
#include "tests/gpu_test.h"

#include <fmt/format.h>

namespace sambay {
namespace {

using testing::DeviceBuffer;

double value(int r, int64_t i) { return double((r * 7 + i * 3) % 11) - 5; }

std::vector<float> values(int r, int64_t begin, int64_t n) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = float(value(r, begin + i));
  return v;
}

double sum_over_ranks(int ranks, int64_t i) {
  double s = 0;
  for (int r = 0; r < ranks; ++r) s += value(r, i);
  return s;
}

void use_my_gpu() {
  int local = 0;
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  cuda_set_device(local % cuda_device_count());
}

// all_reduce, reduce_scatter, all_gather (in place), broadcast and a send/recv ring on device
// buffers, checked against the sums of the hand-computed values.
void check_collectives(const Communicator& c, int64_t n) {
  const std::string where =
      fmt::format("backend {} rank {} of {}", backend_name(c.backend), c.rank, c.size);
  {
    DeviceBuffer<float> buf(values(c.rank, 0, n));
    all_reduce(c, buf.ptr, buf.ptr, n, DType::f32, ReduceOp::sum);
    wait(c);
    const std::vector<float> got = buf.download();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(got[i], sum_over_ranks(c.size, i)) << where << " all_reduce " << i;
  }
  {
    std::vector<bf16> host(n);
    for (int64_t i = 0; i < n; ++i) host[i] = to_bf16(float(value(c.rank, i)));
    DeviceBuffer<bf16> buf(host);
    all_reduce(c, buf.ptr, buf.ptr, n, DType::bf16, ReduceOp::max);
    wait(c);
    const std::vector<bf16> got = buf.download();
    for (int64_t i = 0; i < n; ++i) {
      double want = value(0, i);
      for (int r = 1; r < c.size; ++r) want = std::max(want, value(r, i));
      ASSERT_EQ(to_float(got[i]), want) << where << " bf16 max " << i;
    }
  }
  {
    DeviceBuffer<float> send(values(c.rank, 0, c.size * n));
    DeviceBuffer<float> recv(n);
    recv.poison();
    reduce_scatter(c, send.ptr, recv.ptr, n, DType::f32, ReduceOp::sum);
    wait(c);
    const std::vector<float> got = recv.download();
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(got[i], sum_over_ranks(c.size, c.rank * n + i)) << where << " reduce_scatter " << i;
  }
  {
    DeviceBuffer<float> buf(c.size * n);
    buf.poison();
    const std::vector<float> mine = values(c.rank, 0, n);
    cuda_copy_to_device(buf.ptr + c.rank * n, mine.data(), n * sizeof(float));
    all_gather(c, buf.ptr + c.rank * n, buf.ptr, n, DType::f32);
    wait(c);
    const std::vector<float> got = buf.download();
    for (int q = 0; q < c.size; ++q)
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(got[q * n + i], value(q, i)) << where << " all_gather block " << q;
  }
  {
    const int root = c.size - 1;
    DeviceBuffer<float> buf(n);
    if (c.rank == root)
      buf.upload(values(root, 0, n));
    else
      buf.poison();
    broadcast(c, buf.ptr, n, DType::f32, root);
    wait(c);
    const std::vector<float> got = buf.download();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], value(root, i)) << where << " broadcast";
  }
  if (c.size > 1 && c.backend != CommBackend::nccl) {
    // Blocking MPI point-to-point: even ranks send first, odd ranks receive first.
    const int next = (c.rank + 1) % c.size, prev = (c.rank + c.size - 1) % c.size;
    DeviceBuffer<float> mine(values(c.rank, 0, n)), got(n);
    got.poison();
    if (c.rank % 2 == 0) {
      send(c, mine.ptr, n, DType::f32, next);
      recv(c, got.ptr, n, DType::f32, prev);
    } else {
      recv(c, got.ptr, n, DType::f32, prev);
      send(c, mine.ptr, n, DType::f32, next);
    }
    const std::vector<float> host = got.download();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(host[i], value(prev, i)) << where << " recv";
  }
  barrier(c);
}

TEST(GpuCommunicator, HostStagedMpiWithRanksSharingOneGpu) {
  SAMBAY_REQUIRE_GPU();
  use_my_gpu();
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::mpi_host_staged, "world");
  for (int64_t n : {1, 1000, 300001}) check_collectives(c, n);
}

TEST(GpuCommunicator, NcclWithOneRank) {
  SAMBAY_REQUIRE_GPU();
  use_my_gpu();
  const Communicator c = make_communicator(MPI_COMM_SELF, CommBackend::nccl, "self");
  EXPECT_NE(comm_stream(c), nullptr);
  for (int64_t n : {1, 1000, 300001}) check_collectives(c, n);
}

TEST(GpuCommunicator, NcclAcrossRanksWithAGpuEach) {
  SAMBAY_REQUIRE_GPU();
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (cuda_device_count() < size)
    GTEST_SKIP() << "needs a GPU per rank: " << size << " ranks, " << cuda_device_count()
                 << " GPUs";
  use_my_gpu();
  const Communicator c = make_communicator(MPI_COMM_WORLD, CommBackend::nccl, "world");
  for (int64_t n : {1, 1000, 300001}) check_collectives(c, n);
}

}  // namespace
}  // namespace sambay
