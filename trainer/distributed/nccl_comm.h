// NCCL backend of RawComm for device buffers (CUDA builds only; raw pointers and streams, no
// LibTorch). The unique id travels from rank 0 through the bootstrap (MPI) communicator; every
// collective runs on the backend's own stream, ordered after the compute stream by an event, and
// Work::Wait() orders the compute stream after the collective (the host does not block).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "trainer/distributed/comm.h"

namespace reid::dist {

// Creates the NCCL communicator over the ranks of `bootstrap` on CUDA device `device`
// (cudaSetDevice is called). `compute` is the stream the caller's kernels run on (nullptr: the
// legacy default stream). Collective on every rank of `bootstrap`.
std::unique_ptr<RawComm> MakeNcclComm(RawComm& bootstrap, int device,
                                      cudaStream_t compute = nullptr);

// Number of visible CUDA devices; 0 when there is no driver or no GPU (never fails).
int CudaDeviceCount();

}  // namespace reid::dist
