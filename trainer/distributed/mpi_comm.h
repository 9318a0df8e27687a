// MPI backend of RawComm for host buffers: one helper thread owns all MPI calls and runs the
// collectives in submission order (so they overlap the caller's compute), a watchdog aborts the
// job when one runs past the timeout, and large all-reduces run as a ring over reused buffers.
#pragma once

#include <mpi.h>

#include <memory>

#include "trainer/distributed/comm.h"

namespace reid::dist {

struct MpiCommOptions {
  // A collective unfinished after this many seconds aborts the whole job (MPI_Abort) with a
  // message naming rank, operation and sequence number. <= 0 disables the watchdog. The job's
  // value is dist.timeout_s (MakeCommunicator sets it), whose default the schema holds.
  double timeout_s = 0;
  // Buffers are processed in pieces of at most this many bytes (int counts, bounded scratch).
  // 1 MiB measured best on the 2-core VM (bench_allreduce --chunk_bytes): larger pieces fell to
  // under 1 GB/s at 16 MB and up, as Open MPI's own all-reduce does.
  size_t chunk_bytes = 1u << 20;
  // All-reduces of at least this many bytes use our ring (MPI_Sendrecv into a scratch buffer
  // allocated once); smaller ones call MPI_Allreduce. 0 = always the ring, SIZE_MAX = never.
  // (Below 8 MiB Open MPI's own all-reduce was as fast or faster on the 2-core VM; above, its
  // fresh temporary buffer per call costs it up to 2.5x.)
  size_t ring_min_bytes = 8u << 20;
  // Pieces of the MPI_Allreduce path (below ring_min_bytes): bounds int counts and Open MPI's
  // temporary buffer, which malloc then reuses.
  size_t plain_chunk_bytes = 8u << 20;
  // Operations of at most this many bytes run on the caller's thread when the helper is idle
  // (saves two thread hand-offs, ~50 us, per small collective).
  size_t inline_max_bytes = 64u << 10;
};

// Duplicates `comm` (so our collectives never mix with the caller's) and starts the helper and
// watchdog threads. MPI must be initialised (InitRanks) and stay so until this is destroyed.
std::unique_ptr<RawComm> MakeMpiComm(MPI_Comm comm, const MpiCommOptions& options);

}  // namespace reid::dist
