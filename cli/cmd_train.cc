// `reid train`: both stages of the improved CLIP-ReID on one process or on N ranks under mpirun.
// User errors (config, flags, dataset, checkpoint) exit 2 before any collective, on every rank;
// the output directory's lock, which only rank 0 takes, is the one verdict broadcast to the
// others (the first collective after the communicator is set up).
#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>

#include "base/file_util.h"
#include "base/init.h"
#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "cli/config_flags.h"
#include "monitoring/report/report.h"
#include "monitoring/run_identity.h"
#include "trainer/checkpoint.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/ranks.h"
#include "trainer/distributed/stop_signal.h"
#include "trainer/memory_estimate.h"
#include "trainer/model/reid_model.h"
#include "trainer/output_lock.h"
#include "trainer/trainer.h"

DECLARE_string(bpe_vocab);
DECLARE_string(data_root);
DECLARE_string(weights);
DEFINE_string(output_dir, "",
              "Output folder (created): train: the run directory (config, logs, checkpoints, "
              "metrics.json); import: the checkpoint's run directory; synth: the dataset; "
              "clip-encode: image_features.npy / text_features.npy");
DEFINE_string(resume, "",
              "'auto' = newest valid checkpoint in --output_dir (fresh start if none), or a "
              "checkpoint directory / run directory; empty = fresh start");
DEFINE_int32(start_stage, 1, "1, or 2 to start stage 2 (from a stage-1 checkpoint with --resume)");
DEFINE_string(device, "", "cpu or cuda; empty = CUDA device <local rank> when there is one");

namespace reid::trainer {
namespace {

// The user-facing checks of the flags themselves (no files read yet).
Status CheckFlags(torch::Device* device, const dist::Ranks& ranks) {
  if (FLAGS_start_stage != 1 && FLAGS_start_stage != 2) {
    return Status::InvalidArgument("--start_stage=" + std::to_string(FLAGS_start_stage) +
                                   ": must be 1 or 2");
  }
  if (FLAGS_output_dir.empty()) return Status::InvalidArgument("--output_dir is required");
  StatusOr<torch::Device> d = DeviceFromFlag(ranks);
  if (!d.ok()) return d.status();
  *device = *d;
  return Status::Ok();
}

// --weights and --bpe_vocab, when given (even empty), replace model.weights and model.bpe_vocab,
// after --config and every --set.
void ApplyModelFileFlags(proto::ModelConfig* m) {
  if (!gflags::GetCommandLineFlagInfoOrDie("weights").is_default) m->set_weights(FLAGS_weights);
  if (!gflags::GetCommandLineFlagInfoOrDie("bpe_vocab").is_default) {
    m->set_bpe_vocab(FLAGS_bpe_vocab);
  }
}

// Where the shipped configs' CLIP files come from, for the messages below.
constexpr char kFetchHint[] =
    "bash scripts/get_clip_weights.sh fetches CLIP's ViT-B-16.pt and "
    "bpe_simple_vocab_16e6.txt.gz into pretrained/ (or into the folder it is given)";

// The model's files, checked before any dataset is read or collective started: empty weights
// need model { random_init: true } (random init never happens by accident), each named file
// exists (NotFound naming the field, the path and how to fetch it) and fits the model
// (model::CheckModelFiles).
Status CheckModelSource(const proto::ModelConfig& m) {
  if (m.weights().empty() && !m.random_init()) {
    return Status::InvalidArgument(
        "model.weights is empty, which would train from random init: name CLIP's weights with "
        "--weights=F or model.weights (bash scripts/get_clip_weights.sh fetches them into "
        "pretrained/), or set model { random_init: true } to train from random init on purpose");
  }
  if (!m.weights().empty() && m.random_init()) {
    return Status::InvalidArgument("model.random_init is true but model.weights = '" + m.weights() +
                                   "' names weights: clear one of them");
  }
  auto exists = [](const std::string& field, const std::string& path) {
    if (path.empty()) return Status::Ok();
    const Status regular =
        base::CheckRegularFile(path, std::numeric_limits<uint64_t>::max(), "a model file");
    if (regular.code() != Status::Code::kNotFound) return regular.Annotate(field);
    std::error_code ec;
    const std::string cwd = std::filesystem::current_path(ec).string();
    return Status::NotFound(
        field + " = '" + path + "': no such file" +
        (path[0] == '/' ? "" : " (relative to the working directory " + cwd + ")") + "; " +
        kFetchHint);
  };
  REID_RETURN_IF_ERROR(exists("model.weights", m.weights()));
  REID_RETURN_IF_ERROR(exists("model.bpe_vocab", m.bpe_vocab()));
  return model::CheckModelFiles(m);
}

// The monitor of this rank: exporter on metrics_port_base + local rank, every series labelled
// run=`run_label`; rank 0's outcome push and its OUTPUT_DIR/history.jsonl.
monitoring::MonitorOptions MonitorOptionsFor(const proto::ReidConfig& cfg, const dist::Ranks& ranks,
                                             const torch::Device& device,
                                             const std::string& run_label) {
  monitoring::MonitorOptions o;
  o.config = cfg.monitoring();
  o.rank = ranks.rank;
  o.local_rank = ranks.local_rank;
  o.world_size = ranks.world_size;
  o.run_label = run_label;
  o.history_path = FLAGS_output_dir + "/history.jsonl";
  o.torch_version = TORCH_VERSION;
  std::string name;
  if (device.is_cuda()) {
    o.gpu_total_bytes =
        static_cast<double>(AvailableMemoryBytes(true, std::max<int>(0, device.index()), &name));
  }
  return o;
}

// Rank 0's DIR/report.html at the end of every run (finished, preempted or failed once training
// began); a report that cannot be written is a warning, never the run's failure.
void WriteReport(const std::string& run_dir) {
  std::error_code ec;
  if (!std::filesystem::exists(run_dir + "/history.jsonl", ec)) return;  // failed before training
  report::ReportInfo info;
  const Status s = report::WriteRunReport(run_dir, &info);
  if (!s.ok()) {
    std::cerr << "warning: run report not written: " << s.message() << "\n";
    return;
  }
  for (const std::string& w : info.warnings) LOG(WARNING) << "run report: " << w;
  std::cout << "report: " << info.path << "\n";
}

// Rank 0's status on every rank (a collective): the code travels, the message stays on rank 0,
// which is the one that prints it.
Status AgreeWithRank0(const Status& mine, dist::Communicator& comm) {
  torch::Tensor code = torch::full({1}, static_cast<int64_t>(mine.code()), torch::kInt64);
  comm.Broadcast(code, 0);
  const auto agreed = static_cast<Status::Code>(code.item<int64_t>());
  if (agreed == Status::Code::kOk) return Status::Ok();
  if (comm.rank() == 0) return mine;
  return agreed == Status::Code::kInternal ? Status::Internal("rank 0 failed (see its message)")
                                           : Status::InvalidArgument("see rank 0's message");
}

// The memory estimate (trainer/memory_estimate.h) against this rank's limit: MemAvailable shared
// by the node's ranks on CPU, the device's memory on CUDA. Each rank reads its own limit, so the
// verdict is agreed (a collective): every rank exits 2 together when one would not fit.
Status CheckMemory(const proto::ReidConfig& cfg, const dist::Ranks& ranks,
                   const torch::Device& device, dist::Communicator& comm) {
  const bool cuda = device.is_cuda();
  const MemoryEstimate estimate =
      EstimateTrainingMemory(cfg, ranks.world_size, cuda && cfg.stage2().amp() ? 2 : 4);
  std::string limit_name;
  const int64_t limit =
      AvailableMemoryBytes(cuda, cuda ? std::max<int>(0, device.index()) : 0, &limit_name);
  const Status mine =
      CheckTrainingMemory(estimate, cuda ? 1 : ranks.local_size, limit, limit_name, cfg);
  torch::Tensor refused = torch::full({1}, mine.ok() ? 0 : 1, torch::kInt64);
  comm.AllReduce(refused, dist::ReduceOp::kMax);
  if (mine.ok() && refused.item<int64_t>() != 0) {
    return Status::InvalidArgument("the training would not fit in memory on another rank");
  }
  return mine;
}

}  // namespace

int RunTrain(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  StatusOr<proto::ReidConfig> loaded = LoadConfigFromFlags(set_overrides);
  if (!loaded.ok()) return Fail("train", loaded.status());
  proto::ReidConfig cfg = std::move(*loaded);
  ApplyModelFileFlags(cfg.mutable_model());
  const dist::Ranks ranks = dist::InitRanks();
  struct Finalize {
    ~Finalize() { dist::FinalizeRanks(); }
  } finalize;
  torch::Device device = torch::kCPU;
  Status s = CheckFlags(&device, ranks);
  if (s.ok()) s = dist::CheckBackend(cfg.dist(), device.is_cuda() ? device.index() : -1);
  if (s.ok()) s = CheckModelSource(cfg.model());  // every rank, before the dataset and the lock
  if (s.ok()) s = monitoring::CheckExporterPorts(cfg.monitoring(), ranks.local_size);
  if (!s.ok()) return Fail("train", s, ranks.rank);
  const monitoring::RunLabel run = monitoring::ChooseRunLabel(
      cfg.name(), FLAGS_output_dir, [](const char* n) { return std::getenv(n); });
  // Rank 0 locks the output directory before anything is written into it (the ranks of one job
  // share it), then clears what a killed run left in checkpoints/ before any rank reads it.
  std::unique_ptr<OutputDirLock> lock;
  std::vector<std::string> leftovers;
  Status locked = Status::Ok();
  if (ranks.rank == 0) {
    StatusOr<std::unique_ptr<OutputDirLock>> l = OutputDirLock::Acquire(FLAGS_output_dir);
    if (l.ok()) {
      lock = std::move(*l);
      leftovers = CheckpointStore(FLAGS_output_dir + "/checkpoints").RemoveLeftovers();
    } else {
      locked = l.status();
    }
  }
  dist::InstallStopSignalHandlers();
  dist::InstallInterruptHandlers();  // Ctrl-C and a closed terminal checkpoint too
  SetIntraOpThreads(dist::IntraOpThreads(cfg.dist().intra_op_threads(), ranks));
  std::unique_ptr<dist::Communicator> comm =
      dist::MakeCommunicator(ranks, cfg.dist(), device.is_cuda() ? device.index() : -1);
  s = AgreeWithRank0(locked, *comm);  // every rank exits 2 together when rank 0 could not lock
  if (s.ok()) s = CheckMemory(cfg, ranks, device, *comm);
  if (s.ok()) s = PrepareOutputDir(FLAGS_output_dir, cfg, ranks.rank);
  if (!s.ok()) return Fail("train", s, ranks.rank);
  base::SetupRunLogging(FLAGS_output_dir, ranks.rank);
  LOG(INFO) << "reid train: rank " << ranks.rank << " of " << ranks.world_size << " (local "
            << ranks.local_rank << "), device " << device << ", config " << FLAGS_config;
  if (lock != nullptr) {
    LOG(INFO) << "holding " << lock->path()
              << (lock->previous_holder().empty()
                      ? std::string()
                      : " (taken over from " + lock->previous_holder() + ", which has ended)");
  }
  for (const std::string& note : leftovers) {
    LOG(INFO) << note;
    std::cout << note << "\n";
  }
  TrainOptions options;
  options.output_dir = FLAGS_output_dir;
  options.data_root = FLAGS_data_root;
  options.resume = FLAGS_resume;
  options.start_stage = FLAGS_start_stage;
  options.device = device;
  LOG(INFO) << "run label \"" << run.value << "\" (from " << run.source << ")";
  if (ranks.rank == 0) {
    std::cout << "reid train: run " << run.value << " on " << ranks.world_size << " rank(s), "
              << (device.is_cuda() ? "cuda" : "cpu") << ", " << at::get_num_threads()
              << " thread(s) per rank, output " << FLAGS_output_dir << std::endl;
  }
  // An exception finishes the monitor with reason error, status 1.
  monitoring::Monitor monitor(MonitorOptionsFor(cfg, ranks, device, run.value));
  Trainer trainer(cfg, options, ranks, *comm);
  trainer.set_monitor(&monitor);
  s = trainer.Setup();
  StatusOr<RunEnd> end = s.ok() ? trainer.Run() : StatusOr<RunEnd>(s);
  if (!end.ok()) {
    monitor.Finish(monitoring::ExitReason::kError, end.status().exit_code());
    if (ranks.rank == 0) WriteReport(FLAGS_output_dir);
    return Fail("train", end.status(), ranks.rank);
  }
  const bool stopped = *end == RunEnd::kPreempted;
  monitor.Finish(stopped ? monitoring::ExitReason::kPreempted : monitoring::ExitReason::kFinished,
                 stopped ? kExitStopped : kExitOk);
  if (ranks.rank == 0) WriteReport(FLAGS_output_dir);
  if (ranks.rank == 0) {
    if (*end == RunEnd::kPreempted) {
      std::cout << "stopped by a signal after writing a checkpoint (exit status " << kExitStopped
                << "); resume with: reid train --config=... --output_dir=" << FLAGS_output_dir
                << " --resume=auto\n";
    } else {
      std::cout << "done: " << FormatEvalResult(trainer.last_eval()) << "\n";
    }
  }
  return stopped ? kExitStopped : kExitOk;
}

}  // namespace reid::trainer
