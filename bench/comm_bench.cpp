// sambay_comm_bench: bus bandwidth of all_reduce, reduce_scatter and all_gather by message size,
// through the communicator interface (parallel/communicator.h). Run it under mpirun:
//   mpirun -np 2 sambay_comm_bench [--backend mpi|nccl|mpi_host_staged] [--max_mb 256]
// Sizes are the full fp32 buffer (the all-reduced buffer, the reduce-scatter input, the
// all-gather output), 1 KiB to max_mb MiB in steps of 4x. Like nccl-tests:
//   algbw = bytes / time;  busbw = algbw * 2(n-1)/n (all_reduce) or (n-1)/n (the others),
// the rate each rank's link must sustain; with one rank busbw is 0. Time is the slowest rank's
// mean over enough iterations to fill about 0.2 s.
#include "core/check.h"
#include "core/cuda_runtime.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace sambay {
namespace {

enum class Op { all_reduce, reduce_scatter, all_gather };
const char* op_name(Op op) {
  return op == Op::all_reduce       ? "all_reduce"
         : op == Op::reduce_scatter ? "reduce_scatter"
                                    : "all_gather";
}

// Host or device memory, as the backend wants.
struct Buffer {
  bool device = false;
  void* ptr = nullptr;
  Buffer(size_t bytes, bool on_device) : device(on_device) {
    bytes = std::max<size_t>(bytes, 4);
    if (device) {
      ptr = cuda_malloc(bytes, "comm bench buffer");
      cuda_memset_zero(ptr, bytes);
    } else {
      ptr = std::calloc(bytes, 1);
    }
  }
  ~Buffer() { device ? cuda_free(ptr) : std::free(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

void run_op(const Communicator& c, Op op, const Buffer& a, Buffer& b, int64_t elements) {
  const int64_t per_rank = elements / c.size;
  switch (op) {
    case Op::all_reduce:
      all_reduce(c, a.ptr, b.ptr, elements, DType::f32, ReduceOp::sum);
      break;
    case Op::reduce_scatter:
      reduce_scatter(c, a.ptr, b.ptr, per_rank, DType::f32, ReduceOp::sum);
      break;
    case Op::all_gather:
      all_gather(c, a.ptr, b.ptr, per_rank, DType::f32);
      break;
  }
}

double seconds(const Communicator& c, Op op, const Buffer& a, Buffer& b, int64_t elements,
               int iters) {
  barrier(c);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run_op(c, op, a, b, elements);
  wait(c);
  const double local = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return all_reduce_scalar(c, local, ReduceOp::max);
}

int bench(int argc, char** argv) {
  std::string backend_arg = "mpi";
  int64_t max_mb = 256;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc)
      backend_arg = argv[++i];
    else if (a == "--max_mb" && i + 1 < argc)
      max_mb = std::stoll(argv[++i]);
    else if (a == "--help" || a == "-h") {
      fmt::print(
          "usage: mpirun -np N sambay_comm_bench [--backend mpi|nccl|mpi_host_staged] "
          "[--max_mb 256]\n");
      return 0;
    } else
      fail("unknown argument '{}' (see --help)", a);
  }
  CommBackend backend;
  if (backend_arg == "mpi")
    backend = CommBackend::mpi;
  else if (backend_arg == "nccl")
    backend = CommBackend::nccl;
  else if (backend_arg == "mpi_host_staged")
    backend = CommBackend::mpi_host_staged;
  else
    fail("--backend '{}' is not mpi, nccl or mpi_host_staged", backend_arg);
  const bool device = backend != CommBackend::mpi;

  const ProcessGrid grid = make_process_grid(1, 1);
  if (device) {
    if (grid.gpu < 0) fail("--backend {} needs a GPU and none was found", backend_arg);
    cuda_set_device(grid.gpu);
  }
  const Communicator c = make_communicator(grid.world, backend, "world");
  const bool lead = c.rank == 0;
  if (lead) {
    fmt::print("sambay_comm_bench: backend {}, {} ranks ({} on this node){}\n",
               backend_name(backend), c.size, grid.local_size,
               device ? ", " + cuda_device_description() : "");
    fmt::print("{:<15} {:>10} {:>10} {:>12} {:>12}\n", "op", "bytes", "time(us)", "algbw(GB/s)",
               "busbw(GB/s)");
  }
  const int n = c.size;
  for (Op op : {Op::all_reduce, Op::reduce_scatter, Op::all_gather}) {
    for (int64_t bytes = 1024; bytes <= max_mb * 1048576; bytes *= 4) {
      const int64_t elements = bytes / 4 / n * n;  // reduce-scatter/all-gather need n | elements
      const int64_t in = op == Op::all_gather ? elements / n : elements;
      const int64_t out = op == Op::reduce_scatter ? elements / n : elements;
      const Buffer a(in * 4, device);
      Buffer b(out * 4, device);
      // Warm up, then pick an iteration count (the same on every rank) that fills ~0.2 s.
      const double once = seconds(c, op, a, b, elements, 2) / 2;
      const int iters = int(std::clamp(0.2 / std::max(once, 1e-7), 3.0, 1000.0));
      const double t = seconds(c, op, a, b, elements, iters) / iters;
      const double algbw = elements * 4.0 / t / 1e9;
      const double factor = op == Op::all_reduce ? 2.0 * (n - 1) / n : double(n - 1) / n;
      if (lead)
        fmt::print("{:<15} {:>10} {:>10.1f} {:>12.2f} {:>12.2f}\n", op_name(op), elements * 4,
                   t * 1e6, algbw, algbw * factor);
    }
  }
  return 0;
}

}  // namespace
}  // namespace sambay

int main(int argc, char** argv) {
  try {
    const sambay::MpiSession mpi;
    return sambay::bench(argc, argv);
  } catch (const std::exception& e) {
    return sambay::report_fatal_error(fmt::format("error: {}", e.what()), 2);
  }
}
