// `reid train`: both stages of the improved CLIP-ReID on one process or on N ranks under mpirun.
// User errors (config, flags, dataset, checkpoint) exit 2 before any collective, on every rank.
#include <ATen/Parallel.h>
#include <gflags/gflags.h>
#include <glog/logging.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "base/init.h"
#include "trainer/cmd_common.h"
#include "trainer/commands.h"
#include "trainer/config_flags.h"
#include "trainer/distributed/communicator.h"
#include "trainer/distributed/ranks.h"
#include "trainer/distributed/stop_signal.h"
#include "trainer/report/report.h"
#include "trainer/trainer.h"

DECLARE_string(data_root);
DEFINE_string(output_dir, "", "Run directory: config, logs, checkpoints, metrics.json (created)");
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

// The monitor of this rank: exporter on metrics_port_base + local rank, rank 0's Pushgateway
// pushes under run = the run directory's name, and its OUTPUT_DIR/history.jsonl.
monitoring::MonitorOptions MonitorOptionsFor(const proto::ReidConfig& cfg,
                                             const dist::Ranks& ranks) {
  monitoring::MonitorOptions o;
  o.config = cfg.monitoring();
  o.rank = ranks.rank;
  o.local_rank = ranks.local_rank;
  o.world_size = ranks.world_size;
  std::filesystem::path dir = std::filesystem::absolute(FLAGS_output_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // a trailing slash
  o.run_name = dir.filename().string();
  o.history_path = FLAGS_output_dir + "/history.jsonl";
  o.torch_version = TORCH_VERSION;
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

int Fail(const Status& s, int rank) {
  // Every rank reaches the same verdict; one message is enough.
  if (rank == 0) std::cerr << "error: reid train: " << s.message() << "\n";
  return s.exit_code();
}

}  // namespace

int RunTrain(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  proto::ReidConfig cfg;
  if (!LoadConfigFromFlags(set_overrides, &cfg)) return kExitUsage;
  const dist::Ranks ranks = dist::InitRanks();
  struct Finalize {
    ~Finalize() { dist::FinalizeRanks(); }
  } finalize;
  torch::Device device = torch::kCPU;
  Status s = CheckFlags(&device, ranks);
  if (s.ok()) s = PrepareOutputDir(FLAGS_output_dir, cfg, ranks.rank);
  if (!s.ok()) return Fail(s, ranks.rank);
  base::SetupRunLogging(FLAGS_output_dir, ranks.rank);
  LOG(INFO) << "reid train: rank " << ranks.rank << " of " << ranks.world_size << " (local "
            << ranks.local_rank << "), device " << device << ", config " << FLAGS_config;
  at::set_num_threads(dist::IntraOpThreads(cfg.dist().intra_op_threads(), ranks,
                                           std::thread::hardware_concurrency()));
  dist::InstallStopSignalHandlers();
  std::unique_ptr<dist::Communicator> comm =
      dist::MakeCommunicator(ranks, cfg.dist(), device.is_cuda() ? device.index() : -1);
  TrainOptions options;
  options.output_dir = FLAGS_output_dir;
  options.data_root = FLAGS_data_root;
  options.resume = FLAGS_resume;
  options.start_stage = FLAGS_start_stage;
  options.device = device;
  if (ranks.rank == 0) {
    std::cout << "reid train: " << cfg.name() << " on " << ranks.world_size << " rank(s), "
              << (device.is_cuda() ? "cuda" : "cpu") << ", " << at::get_num_threads()
              << " thread(s) per rank, output " << FLAGS_output_dir << std::endl;
  }
  monitoring::Monitor monitor(MonitorOptionsFor(cfg, ranks));  // an exception finishes it: error
  Trainer trainer(cfg, options, ranks, *comm);
  trainer.set_monitor(&monitor);
  s = trainer.Setup();
  StatusOr<RunEnd> end = s.ok() ? trainer.Run() : StatusOr<RunEnd>(s);
  if (!end.ok()) {
    monitor.Finish(monitoring::ExitReason::kError);
    if (ranks.rank == 0) WriteReport(FLAGS_output_dir);
    return Fail(end.status(), ranks.rank);
  }
  monitor.Finish(*end == RunEnd::kPreempted ? monitoring::ExitReason::kPreempted
                                            : monitoring::ExitReason::kFinished);
  if (ranks.rank == 0) WriteReport(FLAGS_output_dir);
  if (ranks.rank == 0) {
    if (*end == RunEnd::kPreempted) {
      std::cout << "stopped by a signal after writing a checkpoint; resume with: reid train "
                << "--config=... --output_dir=" << FLAGS_output_dir << " --resume=auto\n";
    } else {
      std::cout << "done: " << FormatEvalResult(trainer.last_eval()) << "\n";
    }
  }
  return kExitOk;
}

}  // namespace reid::trainer
