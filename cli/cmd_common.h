// What several subcommands share: the process's ranks and communicator, the device flag, and the
// checkpoint opened for inference with the test-time overrides of --config, --set, --dataset and
// --data_root. (Fail, the error line of a failed command, is in commands.h.)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "proto/reid_config.pb.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/ranks.h"
#include "trainer/eval/inference_model.h"

namespace reid::trainer {

// The process's ranks and communicator (intra-op threads set from cfg.dist), finalized on exit.
struct Job {
  explicit Job(const proto::ReidConfig& cfg);
  ~Job();
  dist::Ranks ranks;
  std::unique_ptr<dist::Communicator> comm;
};

// at::set_num_threads(threads), and the stop signals blocked in those intra-op threads for good
// (dist::BlockStopSignalsInThisThread): their handlers run on a thread of their own.
void SetIntraOpThreads(int threads);

// --device: cpu, cuda, or empty = CUDA device <local rank> when there is one.
StatusOr<torch::Device> DeviceFromFlag(const dist::Ranks& ranks);

// --checkpoint opened for inference: verified, its config with the test-time sections of
// --config (when given), every --set, then --dataset (when given) and --data_root applied.
StatusOr<InferenceCheckpoint> OpenCheckpointFromFlags(const std::vector<std::string>& set);

}  // namespace reid::trainer
