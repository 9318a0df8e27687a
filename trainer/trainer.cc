// The training loop's frame: set-up, the run of both stages, the optimiser step, checkpoints,
// resume, evaluation and progress lines. Stage bodies are in stage1.cc and stage2.cc.
#include "trainer/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#ifdef REID_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif
#include <google/protobuf/text_format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include "base/build_info.h"
#include "base/file_util.h"
#include "data/loader.h"
#include "data/options.h"
#include "data/synth.h"
#include "proto/reflection.h"
#include "proto/config.h"
#include "trainer/distributed/stop_signal.h"
#include "trainer/eval/eval_run.h"
#include "trainer/losses.h"
#include "trainer/optimizer_state.h"
#include "trainer/schedule.h"

namespace reid::trainer {
namespace fs = std::filesystem;
namespace {

constexpr int kMaxConsecutiveSkipped = 5;

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Status WriteTextAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.good()) return Status::Internal("cannot write " + tmp);
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return Status::Internal("cannot rename " + tmp + ": " + ec.message());
  return Status::Ok();
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// The CUDA caching allocator's bytes allocated to tensors and reserved from the device; -1 when
// not on CUDA (or with a CPU-only LibTorch, where c10/cuda does not exist).
void GpuMemory(const torch::Device& device, double* allocated, double* reserved) {
  *allocated = *reserved = -1;
#ifdef REID_TORCH_CUDA
  if (!device.is_cuda()) return;
  try {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    *allocated = static_cast<double>(stats.allocated_bytes[0].current);  // [0]: all pools
    *reserved = static_cast<double>(stats.reserved_bytes[0].current);
  } catch (const c10::Error& e) {
    LOG_FIRST_N(WARNING, 1) << "CUDA memory statistics: " << e.what_without_backtrace();
  }
#else
  (void)device;
#endif
}

}  // namespace

Status PrepareOutputDir(const std::string& dir, const proto::ReidConfig& cfg, int rank) {
  if (dir.empty()) return Status::InvalidArgument("--output_dir is required");
  std::error_code ec;
  if (fs::exists(dir) && !fs::is_directory(dir)) {
    return Status::InvalidArgument("--output_dir=" + dir + ": exists and is not a directory");
  }
  fs::create_directories(dir + "/logs", ec);
  if (ec)
    return Status::InvalidArgument("--output_dir=" + dir + ": cannot create: " + ec.message());
  const std::string probe = dir + "/.write_test." + std::to_string(rank);
  {
    std::ofstream out(probe);
    out << "ok";
    if (!out.good()) return Status::InvalidArgument("--output_dir=" + dir + ": not writable");
  }
  fs::remove(probe, ec);
  if (rank == 0) {
    std::string text;
    google::protobuf::TextFormat::PrintToString(cfg, &text);
    REID_RETURN_IF_ERROR(
        WriteTextAtomically(dir + "/config.textproto", text).Annotate("--output_dir=" + dir));
  }
  return Status::Ok();
}

Trainer::Trainer(proto::ReidConfig cfg, TrainOptions options, const dist::Ranks& ranks,
                 dist::Communicator& comm)
    : cfg_(std::move(cfg)),
      options_(std::move(options)),
      ranks_(ranks),
      comm_(comm),
      store_(options_.output_dir + "/checkpoints") {
  if (const char* at = std::getenv("REID_TEST_STOP_AT")) test_stop_at_ = at;
}

Status Trainer::LoadData() {
  // Dataset: --data_root, else data.root, else (SYNTHETIC) generated into the run directory.
  std::string root = !options_.data_root.empty() ? options_.data_root : cfg_.data().root();
  const bool synthetic = cfg_.data().dataset() == proto::DataConfig::SYNTHETIC;
  if (root.empty() && synthetic && !options_.output_dir.empty()) {
    root = options_.output_dir + "/data";
    if (ranks_.rank == 0 && !fs::exists(root + "/.complete")) {
      data::SynthOptions opt = data::SynthOptionsFromConfig(cfg_.data());
      const StatusOr<data::SynthSummary> written = data::GenerateSynthetic(opt, root);
      if (!written.ok())
        return Status::Internal("synthetic dataset: " + written.status().message());
      std::ofstream(root + "/.complete") << "done\n";
      std::cout << "generated the synthetic dataset (data.synthetic) in " << root << "\n";
    }
    comm_.Barrier();
  }
  if (root.empty()) return Status::InvalidArgument("no dataset: set data.root or --data_root");
  REID_ASSIGN_OR_RETURN(dataset_,
                        data::LoadDataset(data::DatasetKindFromConfig(cfg_.data()), root));
  if (dataset_.train.empty() || dataset_.query.empty() || dataset_.gallery.empty()) {
    return Status::InvalidArgument(root + ": a split is empty (train " +
                                   std::to_string(dataset_.train.size()) + ", query " +
                                   std::to_string(dataset_.query.size()) + ", gallery " +
                                   std::to_string(dataset_.gallery.size()) + ")");
  }
  const int threads = std::max(1, cfg_.data().num_workers());
  for (auto [name, split] : {std::pair{"train", &dataset_.train},
                             {"query", &dataset_.query},
                             {"gallery", &dataset_.gallery}}) {
    std::vector<std::string> bad;
    REID_RETURN_IF_ERROR(
        data::CheckReadable(name, *split, cfg_.data().max_unreadable_fraction(), threads, &bad));
    MeterUnreadable(static_cast<int64_t>(bad.size()));
  }
  return Status::Ok();
}

Status Trainer::BuildModel() {
  torch::manual_seed(cfg_.seed());
  REID_ASSIGN_OR_RETURN(model_,
                        model::BuildReidModel(cfg_, dataset_.num_train_pids, dataset_.num_cameras));
  model_->to(options_.device);
  return Status::Ok();
}

Status Trainer::Setup() {
  REID_RETURN_IF_ERROR(LoadData());
  std::vector<int> labels;
  for (const data::Sample& s : dataset_.train) labels.push_back(s.pid);
  const auto& s2 = cfg_.stage2();
  REID_RETURN_IF_ERROR(data::PkSampler(labels, s2.ids_per_batch(), s2.num_instances(), cfg_.seed())
                           .Validate(ranks_.world_size));
  REID_RETURN_IF_ERROR(BuildModel());
  pos_.stage = options_.start_stage;

  if (options_.resume.empty()) return Status::Ok();
  std::string path;
  if (options_.resume == "auto") {
    StatusOr<std::string> latest = store_.FindLatestValid();
    if (!latest.ok() && latest.status().code() != Status::Code::kNotFound) {
      return latest.status().Annotate("--resume=auto");  // e.g. a format-1 checkpoint
    }
    if (!latest.ok()) {
      LOG(INFO) << "--resume=auto: " << latest.status().message() << "; starting fresh";
      return Status::Ok();
    }
    path = *latest;
  } else {
    StatusOr<std::string> resolved = ResolveCheckpoint(options_.resume);
    if (!resolved.ok()) return resolved.status().Annotate("--resume");
    path = *resolved;
  }
  proto::CheckpointMeta meta;
  REID_RETURN_IF_ERROR(VerifyCheckpoint(path, &meta).Annotate("--resume"));
  REID_RETURN_IF_ERROR(CheckResumeConfig(meta.config()).Annotate("--resume=" + path));
  REID_RETURN_IF_ERROR(RestoreModel(path, meta));
  if (options_.start_stage == 2 && meta.stage() == 1) {
    pos_.stage = 2;  // stage 2 from a stage-1 checkpoint: fresh stage-2 position and optimiser
  } else {
    pos_.stage = meta.stage();
    pos_.next_epoch = meta.sampler().epoch();
    pos_.next_step = meta.sampler().step();
    pos_.global_step = meta.global_step();
  }
  if (ranks_.rank == 0) {
    std::cout << "resuming from " << path << " (stage " << meta.stage() << ", epoch "
              << meta.sampler().epoch() << ", step " << meta.sampler().step() << ")\n";
  }
  return Status::Ok();
}

Status Trainer::CheckResumeConfig(const proto::ReidConfig& saved) const {
  std::vector<std::string> fatal, applied;
  const std::vector<std::string> diff = proto::DiffFields(saved, cfg_);
  for (const std::string& f : diff) {
    (config::ChangesShapesOrData(f) ? fatal : applied).push_back(f);  // the schema declares it
  }
  if (!fatal.empty()) {
    return Status::InvalidArgument(
        "the config differs from the checkpoint's in fields that "
        "change shapes or data: " +
        Join(fatal));
  }
  if (!applied.empty() && ranks_.rank == 0) {
    std::cerr << "warning: the config differs from the checkpoint's; applying the new values of: "
              << Join(applied) << "\n";
  }
  return Status::Ok();
}

Status Trainer::RestoreModel(const std::string& path, const proto::CheckpointMeta& meta) {
  const model::StateDict state = model::ModuleStateDict(*model_);
  // model.pt holds exactly these tensors: their bytes plus the zip's and the pickle's few hundred
  // bytes per tensor. A larger file is refused before it is read.
  uint64_t model_bytes = 0;
  for (const auto& [name, t] : state) model_bytes += t.nbytes();
  const uint64_t limit = model_bytes + 4096 * state.size() + (1 << 20);
  StatusOr<std::string> bytes =
      ReadCheckpointFile(path, meta, "model.pt", limit,
                         "the model of this config holds " + base::FormatBytes(model_bytes));
  if (!bytes.ok()) return bytes.status();
  StatusOr<NamedTensors> loaded = DeserializeTensors(*bytes, path + "/model.pt");
  if (!loaded.ok()) return loaded.status();
  const NamedTensors target(state.begin(), state.end());
  REID_RETURN_IF_ERROR(CopyTensorsByName(*loaded, target, path + "/model.pt"));
  // The other files are optional (NotFound: not listed); a listed one must read.
  using MaybeBytes = std::optional<std::string>;
  auto optional_file = [&](const char* name) -> StatusOr<MaybeBytes> {
    StatusOr<std::string> b = ReadCheckpointFile(path, meta, name);
    if (!b.ok() && b.status().code() == Status::Code::kNotFound) return MaybeBytes();
    if (!b.ok()) return b.status();
    return MaybeBytes(std::move(*b));
  };
  REID_ASSIGN_OR_RETURN(const MaybeBytes centers, optional_file("class_centers.pt"));
  if (centers) {
    StatusOr<NamedTensors> c = DeserializeTensors(*centers, path + "/class_centers.pt");
    if (!c.ok()) return c.status();
    if (c->size() != 1 || c->at(0).first != "class_centers" || c->at(0).second.dim() != 2 ||
        c->at(0).second.scalar_type() != torch::kFloat ||
        c->at(0).second.size(0) != dataset_.num_train_pids) {
      return Status::DataLoss(path +
                              "/class_centers.pt: expected one float32 tensor "
                              "'class_centers' of (classes, D)");
    }
    class_centers_ = c->at(0).second;
  }
  REID_ASSIGN_OR_RETURN(const MaybeBytes opt, optional_file("optimizer.pt"));
  if (opt) {
    StatusOr<NamedTensors> o = DeserializeTensors(*opt, path + "/optimizer.pt");
    if (!o.ok()) return o.status();
    resume_.optimizer = std::move(*o);
    resume_.optimizer_file = path + "/optimizer.pt";
    resume_.optimizer_stage = meta.stage();
  }
  REID_ASSIGN_OR_RETURN(const MaybeBytes scaler, optional_file("scaler.pt"));
  if (scaler) {
    StatusOr<NamedTensors> st = DeserializeTensors(*scaler, path + "/scaler.pt");
    if (!st.ok()) return st.status();
    resume_.scaler = *st;
    resume_.scaler_stage = meta.stage();
  }
  REID_ASSIGN_OR_RETURN(const MaybeBytes rng, optional_file("rng.pt"));
  if (rng) REID_RETURN_IF_ERROR(RestoreRng(path, meta, *rng));
  return Status::Ok();
}

Status Trainer::RestoreRng(const std::string& path, const proto::CheckpointMeta& meta,
                           const std::string& bytes) {
  const std::string file = path + "/rng.pt";
  StatusOr<NamedTensors> r = DeserializeTensors(bytes, file);
  if (!r.ok()) return r.status();
  at::Generator generator = at::detail::getDefaultCPUGenerator();  // a handle: shared state
  const int64_t state_bytes = generator.get_state().numel();
  const int saved = meta.world_size();
  std::map<std::string, torch::Tensor> by_name(r->begin(), r->end());
  if (saved < 1 || static_cast<int64_t>(by_name.size()) != saved) {
    return Status::DataLoss(file + ": " + std::to_string(by_name.size()) +
                            " generator states for a world of " + std::to_string(saved) +
                            " rank(s) (meta.pb)");
  }
  for (int k = 0; k < saved; ++k) {
    auto it = by_name.find("rank" + std::to_string(k));
    if (it == by_name.end() || it->second.scalar_type() != torch::kByte || it->second.dim() != 1 ||
        it->second.numel() != state_bytes) {
      return Status::DataLoss(file + ": expected 'rank" + std::to_string(k) + "', a uint8 " +
                              "generator state of " + std::to_string(state_bytes) + " bytes");
    }
  }
  if (ranks_.rank < saved) {
    try {
      generator.set_state(by_name["rank" + std::to_string(ranks_.rank)]);
    } catch (const c10::Error& e) {  // LibTorch checks the state's content
      return Status::DataLoss(file + ": rank" + std::to_string(ranks_.rank) +
                              " is not a CPU generator state");
    }
  }
  if (saved != ranks_.world_size && ranks_.rank == 0) {
    const int now = ranks_.world_size;
    const int lo = std::min(saved, now), hi = std::max(saved, now) - 1;
    const std::string ranks = lo == hi ? "rank " + std::to_string(lo)
                                       : "ranks " + std::to_string(lo) + ".." + std::to_string(hi);
    std::cerr << "warning: --resume: " << path << " was written by " << saved << " rank(s), this "
              << "run has " << now << ": not exact from here on: the RNG streams of " << ranks
              << (saved > now ? " are dropped"
                              : " are not in the checkpoint (a fresh start's generator)")
              << " (model, optimizer, loss scale and position are restored)\n";
  }
  return Status::Ok();
}

Status Trainer::RestoreOptimizer(int stage) {
  if (resume_.optimizer_stage != stage) return Status::Ok();
  resume_.optimizer_stage = 0;
  NamedTensors params;
  for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
  const NamedTensors state = std::move(resume_.optimizer);
  resume_.optimizer.clear();
  return RestoreOptimizerState(step_.optimizer.get(), params, state, resume_.optimizer_file);
}

dist::NamedTensors Trainer::Parameters() const {
  dist::NamedTensors out;  // registration order: GradSync's bucket order depends on it
  for (const auto& p : model_->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

dist::NamedTensors Trainer::Buffers() const {
  dist::NamedTensors out;
  for (const auto& b : model_->named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

void Trainer::SetTrainable(int stage) { model_->SetTrainable(stage); }  // the model's split

bool StepCheckpointDue(int period_steps, int64_t global_step) {
  return period_steps > 0 && global_step > 0 && global_step % period_steps == 0;
}

StatusOr<Trainer::StepOutcome> Trainer::Step(const torch::Tensor& loss,
                                             const std::vector<torch::Tensor>& parts) {
  StepOutcome out;
  std::vector<torch::Tensor> all = {loss.detach().reshape({1})};
  for (const torch::Tensor& p : parts) all.push_back(p.detach().reshape({1}));
  torch::Tensor values = torch::cat(all).to(torch::kCPU, torch::kFloat64);
  const double reduce_start = NowSeconds();
  if (comm_.size() > 1) comm_.AllReduce(values, dist::ReduceOp::kAvg);
  out.loss_allreduce_s = NowSeconds() - reduce_start;
  out.losses.assign(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
  out.nonfinite = !std::isfinite(out.losses[0]);
  if (out.nonfinite) {  // the same verdict on every rank
    ++step_.skipped_nonfinite;
    if (++step_.consecutive_nonfinite > kMaxConsecutiveSkipped) {
      return Status::Internal("the loss was not finite in " +
                              std::to_string(step_.consecutive_nonfinite) +
                              " steps in a row; stopping (the last good checkpoint is kept; lower "
                              "the learning rate or check the data)");
    }
    LOG(WARNING) << "non-finite loss: step skipped (" << step_.skipped_nonfinite << " so far)";
    return out;
  }
  step_.consecutive_nonfinite = 0;
  step_.optimizer->zero_grad();
  step_.scaler.Scale(loss).backward();  // GradSync averages the gradients during/after it
  if (step_.scaler.enabled()) {
    std::vector<torch::Tensor> params;
    for (const auto& p : model_->parameters()) params.push_back(p);
    const bool overflow = step_.scaler.UnscaleAndCheck(params, comm_);  // the same on every rank
    step_.scaler.Update(overflow);
    if (overflow) {
      ++step_.overflow_skipped;
      LOG(INFO) << "gradient overflow: step skipped, loss scale now " << step_.scaler.scale();
      return out;
    }
  }
  step_.optimizer->step();
  ++pos_.global_step;
  out.stepped = true;
  return out;
}

StepMeter Trainer::MakeMeter(int stage, int max_epochs, int log_period, int64_t steps_before,
                             int64_t total_steps, const dist::GradSync& sync) {
  if (monitor_ != nullptr) {  // progress: steps done (a resumed run's too) and planned
    monitor_->StartStage({stage, steps_before, steps_before + total_steps, max_epochs});
  }
  MeterOptions o;
  o.stage = stage;
  o.max_epochs = max_epochs;
  o.log_period = log_period;
  o.metrics_every = cfg_.monitoring().log_every_steps();
  o.world_size = comm_.size();
  o.rank = ranks_.rank;
  o.total_steps = total_steps;
  for (const char* label : ProgressLossLabels(stage)) o.progress_names.push_back(label);
  for (const ReportedLoss& r : ReportedLosses(stage)) o.metric_losses.emplace_back(r.metric, r.value);
  MeterProbes p;
  p.comm_wait_s = [this] { return comm_.wait_seconds(); };
  p.sync_wait_s = [&sync] { return sync.stats().wait_seconds; };
  p.sync_comm_s = [&sync] { return sync.stats().comm_seconds; };
  p.sync_steps = [&sync] { return sync.stats().steps; };
  p.sync_total_bytes = [&sync] { return static_cast<double>(sync.total_bytes()); };
  const torch::Device device = options_.device;
  p.gpu_memory = [device](double* allocated, double* reserved) {
    GpuMemory(device, allocated, reserved);
  };
  return StepMeter(std::move(o), std::move(p), monitor_, ranks_.rank == 0 ? &std::cout : nullptr);
}

StepResult Trainer::Result(int epoch, int64_t step, int64_t steps, const StepOutcome& out) {
  StepResult r;
  r.epoch = epoch;
  r.step = step;
  r.steps = steps;
  r.losses = out.losses;
  r.loss_allreduce_s = out.loss_allreduce_s;
  r.skipped_nonfinite = out.nonfinite;
  r.learning_rate = CurrentLearningRate(*step_.optimizer);
  r.loss_scale = step_.scaler.enabled() ? step_.scaler.scale() : 1.0;
  r.global_step = pos_.global_step;
  return r;
}

StatusOr<StageEnd> Trainer::AfterStep(int stage, int epoch, int64_t step, int64_t steps,
                                      bool stepped) {
  const bool last = step == steps;
  const int64_t next_epoch = last ? epoch + 1 : epoch, next_step = last ? 0 : step;
  if (StopRequested(stage, epoch, step)) return Preempt(stage, next_epoch, next_step);
  if (stepped && StepCheckpointDue(cfg_.checkpoint().period_steps(), pos_.global_step)) {
    if (last) {
      step_checkpoint_pending_ = true;  // after the epoch (and its evaluation)
    } else {
      const Status s = SaveCheckpoint(stage, next_epoch, next_step);
      if (!s.ok()) LOG(WARNING) << "checkpoint.period_steps: " << s.message();
    }
  }
  return StageEnd::kDone;
}

Status Trainer::EndOfEpochCheckpoint(int stage, int epoch, bool period_due) {
  if (!period_due && !step_checkpoint_pending_) return Status::Ok();
  step_checkpoint_pending_ = false;
  const Status s = SaveCheckpoint(stage, epoch + 1, 0);
  if (!s.ok()) LOG(WARNING) << "stage " << stage << " epoch " << epoch << ": " << s.message();
  return Status::Ok();
}

StatusOr<StageEnd> Trainer::Preempt(int stage, int64_t next_epoch, int64_t next_step) {
  REID_RETURN_IF_ERROR(SaveCheckpoint(stage, next_epoch, next_step));
  return StageEnd::kPreempted;
}

Status Trainer::StartPrecision(int stage, bool amp, proto::AmpDtype dtype) {
  step_.precision = PrecisionFor(amp, dtype, options_.device);
  step_.scaler = LossScaler(step_.precision.loss_scaling, LossScalerOptions());
  // Test hook: the loss scaler with this initial scale in any precision (fp32 on CPU), so that
  // its path through backward, GradSync, the skip and the checkpoint runs without a GPU.
  if (const char* init = std::getenv("REID_TEST_LOSS_SCALE"); init != nullptr && *init != 0) {
    LossScalerOptions o;
    o.init_scale = std::strtod(init, nullptr);
    CHECK(std::isfinite(o.init_scale) && o.init_scale > 0) << "REID_TEST_LOSS_SCALE=" << init;
    step_.scaler = LossScaler(true, o);
  }
  if (amp && !step_.precision.autocast && ranks_.rank == 0) {
    LOG(INFO) << "stage " << stage << ": amp applies on CUDA only; training in fp32 on CPU";
  }
  LOG(INFO) << "stage " << stage << " precision: " << step_.precision.Describe();
  if (!resume_.scaler.empty() && resume_.scaler_stage == stage) {
    if (step_.scaler.enabled()) REID_RETURN_IF_ERROR(step_.scaler.Restore(resume_.scaler, "scaler.pt"));
    resume_.scaler.clear();
  }
  return Status::Ok();
}

bool Trainer::StopRequested(int stage, int64_t epoch, int64_t step) {
  if (!test_stop_at_.empty() && ranks_.rank == ranks_.world_size - 1 &&
      test_stop_at_ ==
          std::to_string(stage) + ":" + std::to_string(epoch) + ":" + std::to_string(step)) {
    dist::RequestStop();
  }
  return dist::StopRequestedOnAnyRank(comm_.host());
}

Status Trainer::SaveCheckpoint(int stage, int64_t next_epoch, int64_t next_step) {
  // Every rank's RNG state to rank 0; rank 0 writes; the verdict is broadcast.
  torch::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
  torch::Tensor rngs = comm_.AllGather(rng.unsqueeze(0));  // (world, S)
  torch::Tensor ok = torch::zeros({2}, torch::kInt64);     // written, size in bytes
  std::string message;
  if (ranks_.rank == 0) {
    CheckpointFiles files;
    Status serialized = Status::Ok();
    auto add = [&](const char* file, const StatusOr<NamedTensors>& tensors) {
      if (!serialized.ok()) return;
      StatusOr<std::string> bytes =
          tensors.ok() ? SerializeTensors(*tensors) : StatusOr<std::string>(tensors.status());
      if (bytes.ok()) {
        files.emplace_back(file, std::move(*bytes));
      } else {
        serialized = bytes.status().Annotate(file);
      }
    };
    const model::StateDict state = model::ModuleStateDict(*model_);
    add("model.pt", NamedTensors(state.begin(), state.end()));
    if (step_.optimizer && cfg_.checkpoint().save_optimizer()) {
      NamedTensors params;
      for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
      add("optimizer.pt", OptimizerStateTensors(*step_.optimizer, params));
    }
    NamedTensors per_rank;
    for (int r = 0; r < rngs.size(0); ++r)
      per_rank.emplace_back("rank" + std::to_string(r), rngs[r]);
    add("rng.pt", per_rank);
    if (class_centers_.defined())
      add("class_centers.pt", NamedTensors{{"class_centers", class_centers_}});
    if (step_.scaler.enabled() && step_.optimizer) add("scaler.pt", step_.scaler.State());
    proto::CheckpointMeta meta;
    meta.set_stage(stage);
    meta.set_epoch(static_cast<int32_t>(next_epoch - 1));
    meta.set_global_step(pos_.global_step);
    meta.set_world_size(ranks_.world_size);
    meta.mutable_sampler()->set_seed(cfg_.seed());
    meta.mutable_sampler()->set_epoch(static_cast<int32_t>(next_epoch));
    meta.mutable_sampler()->set_step(next_step);
    *meta.mutable_config() = cfg_;
    if (eval_.have && stage == 2) {
      (*meta.mutable_metrics())["mAP"] = eval_.last.mAP;
      if (!eval_.last.cmc.empty()) (*meta.mutable_metrics())["rank1"] = eval_.last.cmc[0];
    }
    StampBuildAndTime(&meta);
    const std::string name = CheckpointName(stage, next_epoch, next_step);
    Status s = serialized.ok() ? store_.Commit(name, meta, files, cfg_.checkpoint().keep_last_n(),
                                               cfg_.checkpoint().keep_best())
                               : serialized.Annotate("checkpoint " + name + " not written");
    if (s.ok()) {
      int64_t bytes = 0;
      for (const auto& file : files) bytes += static_cast<int64_t>(file.second.size());
      ok[0] = 1;
      ok[1] = bytes;
      std::cout << "checkpoint " << store_.dir() << "/" << name << "\n";
    } else {
      message = s.message();
    }
  }
  comm_.Broadcast(ok, 0);
  if (ok[0].item<int64_t>() == 1) {
    if (monitor_ != nullptr) {
      monitor_->RecordCheckpoint(monitoring::UnixSeconds(), ok[1].item<int64_t>());
    }
    return Status::Ok();
  }
  if (ranks_.rank == 0) std::cerr << "error: " << message << "\n";
  return Status::Internal(ranks_.rank == 0 ? message : "checkpoint write failed on rank 0");
}

void Trainer::Evaluate(int epoch, bool* stopped) {
  const double start = NowSeconds();
  torch::Tensor qf = ExtractFeatures(dataset_.query, false, stopped);
  if (*stopped) return;
  torch::Tensor gf = ExtractFeatures(dataset_.gallery, false, stopped);
  if (*stopped) return;
  StatusOr<EvalResult> result =
      RunEvaluation(MakeRankingInput(cfg_.eval(), qf, gf, dataset_.query, dataset_.gallery),
                    cfg_.eval(), cfg_.eval().rerank(), &comm_);
  if (!result.ok()) {  // re-ranking refused for memory: the plain protocol instead
    if (ranks_.rank == 0) std::cerr << "warning: " << result.status().message() << "\n";
    result = RunEvaluation(MakeRankingInput(cfg_.eval(), qf, gf, dataset_.query, dataset_.gallery),
                           cfg_.eval(), false, &comm_);
  }
  eval_.last = *result;
  eval_.have = true;
  if (monitor_ != nullptr) {
    monitor_->RecordEval({2, epoch, pos_.global_step, eval_.last.mAP, eval_.last.cmc});
  }
  LOG(INFO) << "eval stage 2 epoch " << epoch << " | " << FormatEvalResult(eval_.last);
  if (ranks_.rank != 0) return;
  std::cout << "eval stage 2 epoch " << epoch << " | " << FormatEvalResult(eval_.last) << " | "
            << FormatDuration(NowSeconds() - start) << "\n";
  const std::string json =
      EvalResultJson(eval_.last, "\"stage\":2,\"epoch\":" + std::to_string(epoch));
  Status s = WriteTextAtomically(options_.output_dir + "/metrics.json", json + "\n");
  if (!s.ok()) LOG(WARNING) << s.message();
}

StatusOr<RunEnd> Trainer::Run() {
  if (pos_.stage == 1 && cfg_.stage1().enabled()) {
    REID_ASSIGN_OR_RETURN(const StageEnd end, RunStage1());
    if (end == StageEnd::kPreempted) return RunEnd::kPreempted;
  }
  pos_.stage = 2;
  if (cfg_.stage2().enabled()) {
    REID_ASSIGN_OR_RETURN(const StageEnd end, RunStage2());
    if (end == StageEnd::kPreempted) return RunEnd::kPreempted;
  } else if (!eval_.have) {
    bool stopped = false;
    model_->eval();
    Evaluate(0, &stopped);
    if (stopped) return RunEnd::kPreempted;
  }
  if (ranks_.rank == 0 && step_.skipped_nonfinite > 0) {
    std::cout << "skipped " << step_.skipped_nonfinite << " steps with a non-finite loss\n";
  }
  if (ranks_.rank == 0 && step_.overflow_skipped > 0) {
    std::cout << "the loss scaler skipped " << step_.overflow_skipped
              << " steps with an overflowing gradient\n";
  }
  return RunEnd::kFinished;
}

}  // namespace reid::trainer
