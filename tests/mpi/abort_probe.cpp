// A job in which the last rank fails while the others wait in a barrier: it must end (not
// hang) with a message naming the failing rank and its error. ctest checks the message and
// a timeout turns a hang into a failure.
#include "core/check.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

#include <fmt/format.h>

int main() {
  try {
    const sambay::MpiSession mpi;
    const sambay::ProcessGrid grid = sambay::make_process_grid(1, 1);
    const sambay::Communicator world =
        sambay::make_communicator(grid.world, sambay::CommBackend::mpi, "world");
    if (world.rank == world.size - 1) sambay::fail("injected failure for the abort test");
    sambay::barrier(world);  // the other ranks wait here until the job is aborted
    return 0;
  } catch (const sambay::Error& e) {
    return sambay::report_fatal_error(fmt::format("error: {}", e.what()), 2);
  }
}
