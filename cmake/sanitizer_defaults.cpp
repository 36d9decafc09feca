// Compiled into every program of a SAMBAY_SANITIZE build (CMakeLists.txt): the sanitizers'
// options, so that tests and tools run with them however they are started (ctest, a test that
// starts `sambay`, mpirun). The environment (ASAN_OPTIONS, ...) still overrides them.
//   AddressSanitizer: also the order in which globals are initialised is checked.
//   UndefinedBehaviorSanitizer: a finding prints its stack and ends the program.
//   LeakSanitizer: leaks fail the program, except memory the system libraries keep until exit
//   (MPI and its components, HDF5, OpenBLAS, OpenMP). Programs that start MPI do not track
//   what MPI_Init allocates and run the check just before MPI_Finalize
//   (parallel/process_grid.cpp), while MPI's components are still loaded and their memory can
//   be told apart.

extern "C" const char* __asan_default_options() {
  return "check_initialization_order=1:strict_init_order=1";
}

extern "C" const char* __ubsan_default_options() { return "print_stacktrace=1:halt_on_error=1"; }

extern "C" const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\n"
         "leak:libopen-pal.so\n"
         "leak:libopen-rte.so\n"
         "leak:libpmix.so\n"
         "leak:libhwloc.so\n"
         "leak:libevent\n"
         "leak:/openmpi/lib/openmpi3/\n"
         "leak:libhdf5\n"
         "leak:libopenblas.so\n"
         "leak:libgomp.so\n";
}
