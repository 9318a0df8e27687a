// Communicator: collectives on LibTorch tensors over a RawComm (MPI for CPU tensors, NCCL for CUDA
// tensors in CUDA builds). Any dtype is accepted; those MPI lacks travel as float32/int64 copies.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"
#include "base/torch_glog.h"
#include "proto/reid_config.pb.h"
#include "trainer/distributed/comm.h"
#include "trainer/distributed/ranks.h"

namespace reid::dist {

class Communicator {
 public:
  // `host` runs collectives on CPU tensors; `device` (may be null) on CUDA tensors.
  Communicator(std::shared_ptr<RawComm> host, std::shared_ptr<RawComm> device = nullptr);

  int rank() const { return host_->rank(); }
  int size() const { return host_->size(); }
  RawComm& host() { return *host_; }

  // In place on `t` (any layout; a contiguous copy is written back when needed).
  void AllReduce(torch::Tensor& t, ReduceOp op = ReduceOp::kSum);
  // Asynchronous all-reduce of a contiguous tensor of an MPI-native dtype (see comm.h for the
  // rules on buffers); used by GradSync on its flat buckets.
  std::shared_ptr<Work> AllReduceAsync(const torch::Tensor& t, ReduceOp op);
  void Broadcast(torch::Tensor& t, int root = 0);
  // (size * B, ...) := every rank's (B, ...) in rank order; shapes must match across ranks.
  torch::Tensor AllGather(const torch::Tensor& t);
  // (sum B_r, ...) := every rank's (B_r, ...) in rank order; B_r may differ (even be 0), the
  // trailing shape must match. `sizes` receives B_r per rank when not null.
  torch::Tensor AllGatherV(const torch::Tensor& t, std::vector<int64_t>* sizes = nullptr);
  void Barrier();

  // Seconds spent so far waiting for the collectives above to complete (all but
  // AllReduceAsync, whose caller waits): the time this rank was blocked on the others or on the
  // network. Differences across a step give its collective time (monitoring).
  double wait_seconds() const { return wait_ns_.load() * 1e-9; }

 private:
  RawComm& For(const torch::Tensor& t);
  // Waits for `work`, adding the time to wait_ns_.
  void Await(const std::shared_ptr<Work>& work);

  std::shared_ptr<RawComm> host_;
  std::shared_ptr<RawComm> device_;
  std::atomic<int64_t> wait_ns_{0};  // atomic: autograd's device threads run collectives too
};

// OK when this build and this run can use `config`'s backend for a job on `cuda_device` (-1: the
// CPU): NCCL needs a build with NCCL and a CUDA device (a visible GPU); AUTO and MPI always work.
// Else InvalidArgument naming dist.backend and the reason. Checked at start-up, on every rank,
// before MakeCommunicator, for any world size (a config that cannot run on N ranks is refused
// on one too).
Status CheckBackend(const reid::proto::DistConfig& config, int cuda_device);

// The job's communicator for `ranks`: world size 1 -> local (no MPI), else MPI on
// MPI_COMM_WORLD with `config`'s timeout (and NCCL for CUDA tensors when built with it and
// `cuda_device` >= 0). With `cuda_device` >= 0, CheckBackend(config, cuda_device) must be OK;
// with -1 (inference commands) dist.backend does not matter: collectives run on the CPU.
std::unique_ptr<Communicator> MakeCommunicator(const Ranks& ranks,
                                               const reid::proto::DistConfig& config,
                                               int cuda_device = -1);

}  // namespace reid::dist
