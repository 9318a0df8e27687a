// Shared pieces of the subcommands (see cmd_common.h) and Fail (see commands.h).
#include "cli/cmd_common.h"

#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <pthread.h>

#include <algorithm>
#include <iostream>

#include "cli/commands.h"
#include "cli/config_flags.h"
#include "data/dataset.h"
#include "proto/config.h"
#include "trainer/distributed/stop_signal.h"

DECLARE_string(checkpoint);
DECLARE_string(data_root);
DECLARE_string(dataset);
DECLARE_string(device);

namespace reid::trainer {

Job::Job(const proto::ReidConfig& cfg) : ranks(dist::InitRanks()) {
  SetIntraOpThreads(dist::IntraOpThreads(cfg.dist().intra_op_threads(), ranks));
  comm = dist::MakeCommunicator(ranks, cfg.dist(), -1);
}

void SetIntraOpThreads(int threads) {
  at::set_num_threads(threads);
  // Each thread of the team runs one index (ATen's OpenMP parallel_for with grain 1); the calling
  // thread keeps its mask (blocked already where handlers are installed; where none are, the
  // default action must still reach the process).
  const pthread_t caller = pthread_self();
  at::parallel_for(0, threads, 1, [caller](int64_t, int64_t) {
    if (!pthread_equal(pthread_self(), caller)) dist::BlockStopSignalsInThisThread();
  });
}

Job::~Job() {
  comm.reset();
  dist::FinalizeRanks();
}

StatusOr<torch::Device> DeviceFromFlag(const dist::Ranks& ranks) {
  const bool cuda = torch::cuda::is_available();
  if (FLAGS_device == "cuda") {
    if (!cuda)
      return Status::InvalidArgument("--device=cuda: no CUDA device (or a CPU-only LibTorch)");
  } else if (FLAGS_device != "cpu" && !FLAGS_device.empty()) {
    return Status::InvalidArgument("--device=" + FLAGS_device + ": expected cpu or cuda");
  }
  if (FLAGS_device == "cuda" || (FLAGS_device.empty() && cuda)) {
    return torch::Device(torch::kCUDA,
                         ranks.local_rank % std::max<int>(1, torch::cuda::device_count()));
  }
  return torch::Device(torch::kCPU);
}

int Fail(const std::string& cmd, const Status& s, int rank) {
  if (rank == 0) std::cerr << "error: reid " << cmd << ": " << s.message() << "\n";
  return s.exit_code();
}

namespace {

// --dataset NAME -> data.dataset: the enum's name in lowercase (`reid dataset-stats` takes the
// same), and dukemtmc for dukemtmcreid.
Status ApplyDatasetFlag(proto::DataConfig* data) {
  if (gflags::GetCommandLineFlagInfoOrDie("dataset").is_default) return Status::Ok();
  static const std::vector<std::pair<const char*, proto::DataConfig::Dataset>> kNames = {
      {"market1501", proto::DataConfig::MARKET1501},
      {"dukemtmcreid", proto::DataConfig::DUKEMTMCREID},
      {"dukemtmc", proto::DataConfig::DUKEMTMCREID},
      {"msmt17", proto::DataConfig::MSMT17},
      {"csv", proto::DataConfig::CSV},
      {"synthetic", proto::DataConfig::SYNTHETIC}};
  for (const auto& [name, kind] : kNames) {
    if (FLAGS_dataset == name) {
      data->set_dataset(kind);
      return Status::Ok();
    }
  }
  return Status::InvalidArgument(
      "--dataset = '" + FLAGS_dataset +
      "': expected market1501, dukemtmcreid (or dukemtmc), msmt17, csv or synthetic");
}

}  // namespace

StatusOr<InferenceCheckpoint> OpenCheckpointFromFlags(const std::vector<std::string>& set) {
  if (FLAGS_checkpoint.empty()) return Status::InvalidArgument("--checkpoint=DIR is required");
  std::unique_ptr<proto::ReidConfig> user;
  if (!FLAGS_config.empty()) {
    user = std::make_unique<proto::ReidConfig>();
    const config::Problems problems = config::Load(FLAGS_config, {}, user.get());
    if (!problems.empty()) {
      return Status::InvalidArgument("--config=" + FLAGS_config + ": " + problems.front() +
                                     (problems.size() > 1 ? " (and more)" : ""));
    }
  }
  StatusOr<InferenceCheckpoint> opened = OpenCheckpoint(FLAGS_checkpoint);
  if (!opened.ok()) return opened.status().Annotate("--checkpoint");
  InferenceCheckpoint c = std::move(*opened);
  REID_RETURN_IF_ERROR(ApplyTestTimeOverrides(user.get(), set, &c.config));
  REID_RETURN_IF_ERROR(ApplyDatasetFlag(c.config.mutable_data()));
  if (!FLAGS_data_root.empty()) c.config.mutable_data()->set_root(FLAGS_data_root);
  return c;
}

}  // namespace reid::trainer
