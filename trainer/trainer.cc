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

// Leaf fields (dotted paths) whose values differ between two messages of the same type.
void DiffFields(const google::protobuf::Message& a, const google::protobuf::Message& b,
                const std::string& prefix, std::vector<std::string>* out) {
  using google::protobuf::FieldDescriptor;
  const auto* d = a.GetDescriptor();
  const auto* ra = a.GetReflection();
  const auto* rb = b.GetReflection();
  google::protobuf::TextFormat::Printer printer;
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string path = prefix + f->name();
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated()) {
      DiffFields(ra->GetMessage(a, f), rb->GetMessage(b, f), path + ".", out);
      continue;
    }
    auto print = [&](const google::protobuf::Message& m, const auto* r) {
      std::string all, v;
      if (!f->is_repeated()) {
        printer.PrintFieldValueToString(m, f, -1, &all);
        return all;
      }
      for (int k = 0; k < r->FieldSize(m, f); ++k) {
        printer.PrintFieldValueToString(m, f, k, &v);
        all += v + ",";
      }
      return all;
    };
    if (print(a, ra) != print(b, rb)) out->push_back(path);
  }
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string FormatDuration(double s) {
  char buf[32];
  const int64_t t = static_cast<int64_t>(std::max(0.0, s));
  if (t >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(t / 60),
                  static_cast<long long>(t % 60));
  }
  return buf;
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

// The `loss` label of each averaged loss component (Step's order: total first).
monitoring::Losses MetricLosses(int stage, const std::vector<double>& losses) {
  monitoring::Losses out;
  for (const ReportedLoss& r : ReportedLosses(stage)) {
    if (static_cast<size_t>(r.value) < losses.size()) out.emplace_back(r.metric, losses[r.value]);
  }
  return out;
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
  stage_ = options_.start_stage;

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
    stage_ = 2;  // stage 2 from a stage-1 checkpoint: fresh stage-2 position and optimiser
  } else {
    stage_ = meta.stage();
    next_epoch_ = meta.sampler().epoch();
    next_step_ = meta.sampler().step();
    global_step_ = meta.global_step();
  }
  if (ranks_.rank == 0) {
    std::cout << "resuming from " << path << " (stage " << meta.stage() << ", epoch "
              << meta.sampler().epoch() << ", step " << meta.sampler().step() << ")\n";
  }
  return Status::Ok();
}

Status Trainer::CheckResumeConfig(const proto::ReidConfig& saved) const {
  std::vector<std::string> diff, fatal, applied;
  DiffFields(saved, cfg_, "", &diff);
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
    pending_optimizer_ = std::move(*o);
    pending_optimizer_file_ = path + "/optimizer.pt";
    pending_optimizer_stage_ = meta.stage();
  }
  REID_ASSIGN_OR_RETURN(const MaybeBytes scaler, optional_file("scaler.pt"));
  if (scaler) {
    StatusOr<NamedTensors> st = DeserializeTensors(*scaler, path + "/scaler.pt");
    if (!st.ok()) return st.status();
    pending_scaler_ = *st;
    pending_scaler_stage_ = meta.stage();
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
  if (pending_optimizer_stage_ != stage) return Status::Ok();
  pending_optimizer_stage_ = 0;
  NamedTensors params;
  for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
  const NamedTensors state = std::move(pending_optimizer_);
  pending_optimizer_.clear();
  return RestoreOptimizerState(optimizer_.get(), params, state, pending_optimizer_file_);
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

StatusOr<bool> Trainer::Step(const torch::Tensor& loss, const std::vector<torch::Tensor>& parts,
                             std::vector<double>* averaged) {
  std::vector<torch::Tensor> all = {loss.detach().reshape({1})};
  for (const torch::Tensor& p : parts) all.push_back(p.detach().reshape({1}));
  torch::Tensor values = torch::cat(all).to(torch::kCPU, torch::kFloat64);
  const double reduce_start = NowSeconds();
  if (comm_.size() > 1) comm_.AllReduce(values, dist::ReduceOp::kAvg);
  loss_allreduce_s_ = NowSeconds() - reduce_start;
  averaged->assign(values.data_ptr<double>(), values.data_ptr<double>() + values.numel());
  last_step_nonfinite_ = !std::isfinite((*averaged)[0]);
  if (last_step_nonfinite_) {  // the same verdict on every rank
    ++skipped_steps_;
    if (++consecutive_skipped_ > kMaxConsecutiveSkipped) {
      return Status::Internal("the loss was not finite in " + std::to_string(consecutive_skipped_) +
                              " steps in a row; stopping (the last good checkpoint is kept; lower "
                              "the learning rate or check the data)");
    }
    LOG(WARNING) << "non-finite loss: step skipped (" << skipped_steps_ << " so far)";
    return false;
  }
  consecutive_skipped_ = 0;
  optimizer_->zero_grad();
  scaler_.Scale(loss).backward();  // GradSync averages the gradients across ranks during/after it
  if (scaler_.enabled()) {
    std::vector<torch::Tensor> params;
    for (const auto& p : model_->parameters()) params.push_back(p);
    const bool overflow = scaler_.UnscaleAndCheck(params, comm_);  // the same on every rank
    scaler_.Update(overflow);
    if (overflow) {
      ++overflow_steps_;
      LOG(INFO) << "gradient overflow: step skipped, loss scale now " << scaler_.scale();
      return false;
    }
  }
  optimizer_->step();
  ++global_step_;
  return true;
}

Status Trainer::StartPrecision(int stage, bool amp, proto::AmpDtype dtype) {
  precision_ = PrecisionFor(amp, dtype, options_.device);
  scaler_ = LossScaler(precision_.loss_scaling, LossScalerOptions());
  // Test hook: the loss scaler with this initial scale in any precision (fp32 on CPU), so that
  // its path through backward, GradSync, the skip and the checkpoint runs without a GPU.
  if (const char* init = std::getenv("REID_TEST_LOSS_SCALE"); init != nullptr && *init != 0) {
    LossScalerOptions o;
    o.init_scale = std::strtod(init, nullptr);
    CHECK(std::isfinite(o.init_scale) && o.init_scale > 0) << "REID_TEST_LOSS_SCALE=" << init;
    scaler_ = LossScaler(true, o);
  }
  if (amp && !precision_.autocast && ranks_.rank == 0) {
    LOG(INFO) << "stage " << stage << ": amp applies on CUDA only; training in fp32 on CPU";
  }
  LOG(INFO) << "stage " << stage << " precision: " << precision_.Describe();
  if (!pending_scaler_.empty() && pending_scaler_stage_ == stage) {
    if (scaler_.enabled()) REID_RETURN_IF_ERROR(scaler_.Restore(pending_scaler_, "scaler.pt"));
    pending_scaler_.clear();
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
    if (optimizer_ && cfg_.checkpoint().save_optimizer()) {
      NamedTensors params;
      for (const auto& p : model_->named_parameters()) params.emplace_back(p.key(), p.value());
      add("optimizer.pt", OptimizerStateTensors(*optimizer_, params));
    }
    NamedTensors per_rank;
    for (int r = 0; r < rngs.size(0); ++r)
      per_rank.emplace_back("rank" + std::to_string(r), rngs[r]);
    add("rng.pt", per_rank);
    if (class_centers_.defined())
      add("class_centers.pt", NamedTensors{{"class_centers", class_centers_}});
    if (scaler_.enabled() && optimizer_) add("scaler.pt", scaler_.State());
    proto::CheckpointMeta meta;
    meta.set_stage(stage);
    meta.set_epoch(static_cast<int32_t>(next_epoch - 1));
    meta.set_global_step(global_step_);
    meta.set_world_size(ranks_.world_size);
    meta.mutable_sampler()->set_seed(cfg_.seed());
    meta.mutable_sampler()->set_epoch(static_cast<int32_t>(next_epoch));
    meta.mutable_sampler()->set_step(next_step);
    *meta.mutable_config() = cfg_;
    if (have_eval_ && stage == 2) {
      (*meta.mutable_metrics())["mAP"] = last_eval_.mAP;
      if (!last_eval_.cmc.empty()) (*meta.mutable_metrics())["rank1"] = last_eval_.cmc[0];
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
  last_eval_ = *result;
  have_eval_ = true;
  if (monitor_ != nullptr) {
    monitor_->RecordEval({2, epoch, global_step_, last_eval_.mAP, last_eval_.cmc});
  }
  LOG(INFO) << "eval stage 2 epoch " << epoch << " | " << FormatEvalResult(last_eval_);
  if (ranks_.rank != 0) return;
  std::cout << "eval stage 2 epoch " << epoch << " | " << FormatEvalResult(last_eval_) << " | "
            << FormatDuration(NowSeconds() - start) << "\n";
  const std::string json =
      EvalResultJson(last_eval_, "\"stage\":2,\"epoch\":" + std::to_string(epoch));
  Status s = WriteTextAtomically(options_.output_dir + "/metrics.json", json + "\n");
  if (!s.ok()) LOG(WARNING) << s.message();
}

void Trainer::LogProgress(int stage, int epoch, int max_epochs, int64_t step, int64_t steps,
                          const std::vector<double>& losses, const std::vector<const char*>& names,
                          int64_t images, double data_wait_s) {
  const auto now = std::chrono::steady_clock::now();
  const double interval = std::chrono::duration<double>(now - last_log_time_).count();
  last_log_time_ = now;
  const double elapsed = NowSeconds() - stage_start_s_;
  const double eta = stage_steps_done_ > 0
                         ? elapsed / stage_steps_done_ * (stage_steps_total_ - stage_steps_done_)
                         : 0.0;
  char buf[512];
  int n = std::snprintf(buf, sizeof(buf), "stage %d epoch %d/%d step %lld/%lld | loss %.4f", stage,
                        epoch, max_epochs, static_cast<long long>(step),
                        static_cast<long long>(steps), losses.empty() ? 0.0 : losses[0]);
  if (names.size() > 1) {
    n += std::snprintf(buf + n, sizeof(buf) - n, " (");
    for (size_t i = 1; i < names.size() && i < losses.size(); ++i) {
      n += std::snprintf(buf + n, sizeof(buf) - n, "%s%s %.4f", i > 1 ? " " : "", names[i],
                         losses[i]);
    }
    n += std::snprintf(buf + n, sizeof(buf) - n, ")");
  }
  std::snprintf(buf + n, sizeof(buf) - n, " | lr %.2e | %.0f img/s | data %.0f%% | eta %s",
                CurrentLearningRate(*optimizer_), interval > 0 ? images / interval : 0.0,
                interval > 0 ? 100.0 * data_wait_s / interval : 0.0, FormatDuration(eta).c_str());
  LOG(INFO) << buf;
  if (ranks_.rank == 0) std::cout << buf << std::endl;
}

void Trainer::StartMetering(const dist::GradSync& sync) {
  sync_seen_ = sync.stats();
  interval_ = MetricsInterval();
  interval_.start = std::chrono::steady_clock::now();
}

void Trainer::MeterStep(int stage, int epoch, const dist::GradSync& sync,
                        const std::vector<double>& losses, int64_t images, const StepClock& clock,
                        double data_wait_s, bool last_of_epoch) {
  if (monitor_ == nullptr) return;
  const auto now = std::chrono::steady_clock::now();
  const dist::GradSync::Stats& stats = sync.stats();
  monitoring::StepStats step;
  step.stage = stage;
  step.epoch = epoch;
  step.images = images;
  step.step_seconds = std::chrono::duration<double>(now - clock.start).count();
  step.data_wait_seconds = data_wait_s;
  step.allreduce_seconds = stats.wait_seconds - sync_seen_.wait_seconds + loss_allreduce_s_;
  step.other_collective_seconds =
      std::max(0.0, comm_.wait_seconds() - clock.comm_wait_s - loss_allreduce_s_);
  step.skipped_nonfinite = last_step_nonfinite_;
  monitor_->RecordStep(step);
  interval_.images += images;
  interval_.data_wait_s += data_wait_s;
  interval_.comm_s += stats.comm_seconds - sync_seen_.comm_seconds;
  interval_.comm_bytes += static_cast<double>(stats.steps - sync_seen_.steps) * sync.total_bytes();
  sync_seen_ = stats;
  const bool own_period = cfg_.monitoring().log_every_steps() > 0;
  const int every = own_period   ? cfg_.monitoring().log_every_steps()
                    : stage == 1 ? cfg_.stage1().log_period()
                                 : cfg_.stage2().log_period();
  if (++interval_.steps % std::max(1, every) == 0 || (last_of_epoch && !own_period)) {
    MeterInterval(stage, epoch, losses, now);
  }
}

void Trainer::MeterInterval(int stage, int epoch, const std::vector<double>& losses,
                            std::chrono::steady_clock::time_point now) {
  const double seconds = std::chrono::duration<double>(now - interval_.start).count();
  const int n = comm_.size();
  monitoring::IntervalStats s;
  s.stage = stage;
  s.epoch = epoch;
  s.step = global_step_;
  s.losses = MetricLosses(stage, losses);
  s.learning_rate = CurrentLearningRate(*optimizer_);
  s.images_per_second = seconds > 0 ? interval_.images * n / seconds : 0.0;  // shards are equal
  s.data_wait_fraction = seconds > 0 ? std::min(1.0, interval_.data_wait_s / seconds) : 0.0;
  s.loss_scale = scaler_.enabled() ? scaler_.scale() : 1.0;
  if (n > 1 && interval_.comm_s > 0) {  // nccl-tests' bus bandwidth of an all-reduce
    s.bus_bandwidth_bytes_per_second = interval_.comm_bytes * 2.0 * (n - 1) / n / interval_.comm_s;
  }
  GpuMemory(options_.device, &s.gpu_allocated_bytes, &s.gpu_reserved_bytes);
  monitor_->RecordInterval(s);
  interval_ = MetricsInterval();
  interval_.start = now;
}

StatusOr<RunEnd> Trainer::Run() {
  if (stage_ == 1 && cfg_.stage1().enabled()) {
    Status s = RunStage1();
    if (!s.ok()) return s;
    if (stage_ == 1) return RunEnd::kPreempted;  // stage 1 did not finish
  }
  stage_ = 2;
  if (cfg_.stage2().enabled()) {
    Status s = RunStage2();
    if (!s.ok()) return s;
    if (stage_ == 2) return RunEnd::kPreempted;
  } else if (!have_eval_) {
    bool stopped = false;
    model_->eval();
    Evaluate(0, &stopped);
    if (stopped) return RunEnd::kPreempted;
  }
  if (ranks_.rank == 0 && skipped_steps_ > 0) {
    std::cout << "skipped " << skipped_steps_ << " steps with a non-finite loss\n";
  }
  return RunEnd::kFinished;
}

}  // namespace reid::trainer
