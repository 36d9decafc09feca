// sambay_mpi_probe: does this launch wire the ranks together? slurm/train.sbatch runs it under
// each candidate launcher (srun --mpi=pmix, then --mpi=pmi2) and uses the first one under which
// it succeeds, instead of guessing from `srun --mpi=list`: a plugin can be listed and still not
// match the MPI library (Debian's OpenMPI starts under pmix but aborts in MPI_Init under pmi2
// or none).
//
// usage: sambay_mpi_probe N   exits 0 when MPI_COMM_WORLD has N ranks and an all-reduce over
//                             them adds up; otherwise 1 (or MPI aborts), with the reason.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

int main(int argc, char** argv) {
#if defined(__SANITIZE_ADDRESS__)
  __lsan_disable();  // MPI's start-up memory is its own (see parallel/process_grid.cpp)
#endif
  MPI_Init(&argc, &argv);
#if defined(__SANITIZE_ADDRESS__)
  __lsan_enable();
#endif
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const int expected = argc > 1 ? std::atoi(argv[1]) : size;
  // Ranks that each believe they are alone (a launcher without a working PMI) all report size 1.
  int one = 1, sum = 0;
  MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  const bool ok = size == expected && sum == expected;
  if (!ok)
    std::fprintf(stderr, "sambay_mpi_probe: rank %d sees %d ranks (all-reduce sum %d), expected %d\n",
                 rank, size, sum, expected);
  else if (rank == 0)
    std::printf("sambay_mpi_probe: %d ranks wired up\n", size);
#if defined(__SANITIZE_ADDRESS__)
  __lsan_do_leak_check();  // before MPI unloads its components (see parallel/process_grid.cpp)
#endif
  MPI_Finalize();
  return ok ? 0 : 1;
}
