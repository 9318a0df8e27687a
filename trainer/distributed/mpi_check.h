// REID_MPI_CHECK: the one way MPI return codes are checked. A failing call is fatal with the
// call's text, MPI's error string and this process's MPI rank (MPI errors are not recoverable:
// the communicator's state is undefined afterwards).
#pragma once

#include <mpi.h>

namespace reid::dist {

[[noreturn]] void MpiCallFailed(int rc, const char* call, const char* file, int line);

}  // namespace reid::dist

#define REID_MPI_CHECK(call)                                                \
  do {                                                                      \
    const int reid_mpi_rc_ = (call);                                        \
    if (reid_mpi_rc_ != MPI_SUCCESS)                                        \
      ::reid::dist::MpiCallFailed(reid_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
