// GradSync: gradient averaging as PyTorch DDP's reducer does it. Trainable parameters are packed
// into buckets (first 1 MiB, then 25 MiB, per dtype, in registration order; launched in reverse),
// filled from autograd hooks as each gradient is accumulated, all-reduced as an average (the
// division by the world size fused into the all-reduce's last reduction step) as soon as a bucket
// is full and all earlier-launched buckets are, so the communication overlaps the rest of
// backward. When backward ends the gradients are views of the buckets, so later steps accumulate
// straight into them and there is no copy in or out (DDP's gradient_as_bucket_view).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "trainer/distributed/bucket_assignment.h"
#include "trainer/distributed/communicator.h"

namespace reid::dist {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

struct GradSyncOptions {
  // From proto::DistConfig (FromConfig); no defaults of their own.
  double bucket_cap_mb = 0;        // MiB
  double first_bucket_mb = 0;      // MiB
  bool broadcast_at_start = true;  // parameters and buffers from rank 0 at construction
  // Launch each bucket's all-reduce as soon as it is full (during backward). false: launch them
  // all when backward ends, which is faster where no core is free for the communication thread
  // (see docs/performance.md). Collectives are matched by order, so with overlap on, a parameter
  // that is unused on some ranks only must not meet collectives inside backward (the global-batch
  // all-gather and sync BN): its bucket would launch mid-backward on some ranks and at the end on
  // the others. Such models need overlap off (DDP's find_unused_parameters has the same role).
  bool overlap = true;
  static GradSyncOptions FromConfig(const reid::proto::DistConfig& config);
};

// OK when the named tensors (names, dtypes, shapes) are the same on every rank; else Internal, on
// every rank alike, naming the first difference and the ranks involved. Collective.
Status VerifyAcrossRanks(Communicator& comm, const NamedTensors& tensors, const std::string& what);

class GradSync {
 public:
  // `params`: the model's named parameters; only those with requires_grad take part (the
  // trainable set of the current stage: build one GradSync per stage). `buffers` (BN running
  // stats) are checked and broadcast with the parameters. Collective. Internal, on every rank
  // alike, when the ranks' trainable parameters or buffers differ (VerifyAcrossRanks).
  static StatusOr<std::unique_ptr<GradSync>> Create(Communicator& comm, const NamedTensors& params,
                                                    const NamedTensors& buffers,
                                                    GradSyncOptions options);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // false: backward only accumulates local gradients (no_sync micro-steps); the next backward
  // with sync on reduces the accumulated sums.
  void set_sync(bool sync) { sync_ = sync; }
  void set_overlap(bool overlap) { overlap_ = overlap; }
  bool sync() const { return sync_; }

  // Waits for the buckets and writes the averaged gradients into .grad. Runs by itself at the end
  // of every synced backward (an autograd engine callback); calling it again is a no-op.
  void Finish();

  struct Stats {
    int64_t steps = 0;
    int64_t launched_during_backward = 0;  // buckets whose all-reduce started from a hook
    double comm_seconds = 0;               // sum over buckets of the time the all-reduces ran
    double wait_seconds = 0;  // time Finish() blocked waiting for them (the part not hidden)
  };
  const Stats& stats() const { return stats_; }
  void ResetStats() { stats_ = Stats(); }
  const std::vector<std::vector<size_t>>& buckets() const { return buckets_; }
  const std::vector<std::string>& names() const { return names_; }
  int64_t total_bytes() const { return total_bytes_; }

 private:
  // Keeps the trainable parameters of `params`; Create() checks and starts it.
  GradSync(Communicator& comm, const NamedTensors& params, bool overlap);
  NamedTensors Trainable() const;
  void BroadcastFromRoot(const NamedTensors& params, const NamedTensors& buffers);
  void BuildBuckets(const GradSyncOptions& options);
  void RegisterHooks();
  void OnGradReady(size_t index);
  // Puts parameter `index`'s local gradient into its bucket slice (zero when it has none).
  void StageGradient(size_t index);
  void LaunchReadyBuckets(bool from_hook);

  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  std::vector<std::string> names_;
  bool overlap_ = true;
  std::vector<std::vector<size_t>> buckets_;  // launch order
  std::vector<torch::Tensor> flat_;           // one buffer per bucket, allocated once
  std::vector<torch::Tensor> views_;          // per parameter: its slice of the bucket
  std::vector<size_t> bucket_of_;             // per parameter
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::vector<uintptr_t> hook_keys_;
  int64_t total_bytes_ = 0;

  bool sync_ = true;
  bool in_backward_ = false;
  std::vector<char> ready_;      // per parameter
  std::vector<size_t> pending_;  // per bucket
  size_t next_bucket_ = 0;
  std::vector<std::shared_ptr<Work>> work_;
  Stats stats_;
};

}  // namespace reid::dist
