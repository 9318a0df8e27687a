// GradSync (see grad_sync.h); follows torch/csrc/distributed/c10d/reducer.cpp's algorithm.
#include "trainer/distributed/grad_sync.h"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>

#include <chrono>
#include <map>
#include <sstream>
#include <unordered_set>

namespace reid::dist {
namespace {

std::string Describe(const std::string& name, const torch::Tensor& t) {
  std::ostringstream out;
  out << name << " " << t.scalar_type() << " " << t.sizes();
  return out.str();
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

GradSyncOptions GradSyncOptions::FromConfig(const reid::proto::DistConfig& config) {
  GradSyncOptions options;
  options.bucket_cap_mb = config.bucket_cap_mb();
  options.first_bucket_mb = config.first_bucket_mb();
  return options;
}

Status VerifyAcrossRanks(Communicator& comm, const NamedTensors& tensors, const std::string& what) {
  std::string mine;
  for (const auto& [name, t] : tensors) mine += Describe(name, t) + "\n";
  torch::Tensor bytes =
      torch::from_blob(mine.data(), {static_cast<int64_t>(mine.size())}, torch::kByte).clone();
  std::vector<int64_t> sizes;
  torch::Tensor all = comm.AllGatherV(bytes, &sizes);
  std::vector<std::string> per_rank;
  int64_t offset = 0;
  for (int64_t n : sizes) {
    per_rank.emplace_back(reinterpret_cast<const char*>(all.data_ptr<uint8_t>()) + offset, n);
    offset += n;
  }
  for (size_t r = 1; r < per_rank.size(); ++r) {
    if (per_rank[r] == per_rank[0]) continue;
    std::istringstream a(per_rank[0]), b(per_rank[r]);
    std::string la, lb;
    int line = 0;
    while (true) {
      bool ga = static_cast<bool>(std::getline(a, la)), gb = static_cast<bool>(std::getline(b, lb));
      if (!ga) la = "(none)";
      if (!gb) lb = "(none)";
      if (la != lb || (!ga && !gb)) break;
      ++line;
    }
    std::ostringstream msg;
    msg << what << " differ between ranks: entry " << line << " is '" << la << "' on rank 0 but '"
        << lb << "' on rank " << r << " (every rank must build the same model and stage)";
    return Status::Internal(msg.str());
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<GradSync>> GradSync::Create(Communicator& comm, const NamedTensors& params,
                                                     const NamedTensors& buffers,
                                                     GradSyncOptions options) {
  if (!(options.bucket_cap_mb > 0) || !(options.first_bucket_mb > 0)) {
    return Status::InvalidArgument(
        "gradient buckets need positive sizes (dist.bucket_cap_mb " +
        std::to_string(options.bucket_cap_mb) + ", dist.first_bucket_mb " +
        std::to_string(options.first_bucket_mb) + "): build the options with FromConfig");
  }
  std::unique_ptr<GradSync> sync(new GradSync(comm, params, options.overlap));
  const NamedTensors trainable = sync->Trainable();
  REID_RETURN_IF_ERROR(VerifyAcrossRanks(comm, trainable, "trainable parameters"));
  REID_RETURN_IF_ERROR(VerifyAcrossRanks(comm, buffers, "buffers"));
  if (options.broadcast_at_start) sync->BroadcastFromRoot(trainable, buffers);
  sync->BuildBuckets(options);
  sync->RegisterHooks();
  return sync;
}

GradSync::GradSync(Communicator& comm, const NamedTensors& params, bool overlap)
    : comm_(comm), overlap_(overlap) {
  std::unordered_set<const void*> seen;
  for (const auto& [name, p] : params) {
    if (!p.requires_grad() || !seen.insert(p.unsafeGetTensorImpl()).second) continue;
    params_.push_back(p);
    names_.push_back(name);
  }
}

NamedTensors GradSync::Trainable() const {
  NamedTensors trainable;
  for (size_t i = 0; i < params_.size(); ++i) trainable.emplace_back(names_[i], params_[i]);
  return trainable;
}

GradSync::~GradSync() {
  for (size_t i = 0; i < accumulators_.size(); ++i) {
    accumulators_[i]->del_post_hook(hook_keys_[i]);
  }
}

void GradSync::BroadcastFromRoot(const NamedTensors& params, const NamedTensors& buffers) {
  torch::NoGradGuard no_grad;
  if (comm_.size() == 1) return;
  for (const auto* set : {&params, &buffers}) {
    for (const auto& [name, t] : *set) {
      torch::Tensor data = t.detach();
      comm_.Broadcast(data, 0);
    }
  }
}

void GradSync::BuildBuckets(const GradSyncOptions& options) {
  std::vector<int64_t> bytes;
  std::vector<int> keys;
  std::map<std::pair<int, std::string>, int> key_ids;
  for (const auto& p : params_) {
    bytes.push_back(p.numel() * p.element_size());
    auto key = std::make_pair(static_cast<int>(p.scalar_type()), p.device().str());
    keys.push_back(key_ids.emplace(key, static_cast<int>(key_ids.size())).first->second);
    total_bytes_ += bytes.back();
  }
  auto mib = [](double mb) { return static_cast<int64_t>(mb * 1024 * 1024); };
  buckets_ = AssignBuckets(bytes, keys, mib(options.first_bucket_mb), mib(options.bucket_cap_mb));
  views_.resize(params_.size());
  bucket_of_.resize(params_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t numel = 0;
    for (size_t i : buckets_[b]) numel += params_[i].numel();
    const torch::Tensor& first = params_[buckets_[b].front()];
    flat_.push_back(torch::zeros({numel}, first.options().requires_grad(false)));
    int64_t offset = 0;
    for (size_t i : buckets_[b]) {
      // A plain tensor over the bucket's memory rather than an autograd view: gradients become
      // these tensors, and optimizers call detach_() on gradients, which views refuse. The
      // deleter holds the bucket, so the memory outlives any gradient that refers to it.
      torch::Tensor keep = flat_[b];
      views_[i] = torch::from_blob(
          static_cast<char*>(keep.data_ptr()) + offset * keep.element_size(), params_[i].sizes(),
          [keep](void*) {}, keep.options());
      bucket_of_[i] = b;
      offset += params_[i].numel();
    }
  }
  ready_.assign(params_.size(), 0);
  pending_.resize(buckets_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].size();
  work_.resize(buckets_.size());
}

void GradSync::RegisterHooks() {
  using torch::autograd::variable_list;
  for (size_t i = 0; i < params_.size(); ++i) {
    // The accumulator is only weakly held by the parameter: keep it alive, as DDP does.
    auto acc = torch::autograd::impl::grad_accumulator(params_[i]);
    CHECK(acc) << "parameter " << names_[i] << " has no gradient accumulator (not a leaf?)";
    hook_keys_.push_back(
        acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, i](const variable_list& outputs, const variable_list&) {
              OnGradReady(i);
              return outputs;
            })));
    accumulators_.push_back(std::move(acc));
  }
}

void GradSync::OnGradReady(size_t index) {
  if (!sync_) return;
  if (!in_backward_) {
    in_backward_ = true;
    torch::autograd::Engine::get_default_engine().queue_callback([this] { Finish(); });
  }
  CHECK(!ready_[index]) << "gradient of " << names_[index]
                        << " marked ready twice in one backward (reentrant backward or a"
                           " parameter used by two graphs?)";
  ready_[index] = 1;
  StageGradient(index);
  if (--pending_[bucket_of_[index]] == 0 && overlap_) LaunchReadyBuckets(/*from_hook=*/true);
}

void GradSync::StageGradient(size_t index) {
  torch::NoGradGuard no_grad;
  const torch::Tensor& grad = params_[index].grad();
  torch::Tensor& view = views_[index];
  // After the first step the gradient lives in the bucket (see Finish) and there is nothing to
  // copy: it already holds this step's sum, and that of earlier no-sync micro-steps. The division
  // by the world size is left to the all-reduce (an average, fused into the ring's last reduction
  // step or ncclAvg), the same on every rank whichever path a gradient took.
  if (!grad.defined()) {
    view.zero_();
  } else if (grad.data_ptr() != view.data_ptr()) {
    view.copy_(grad);
  }
}

void GradSync::LaunchReadyBuckets(bool from_hook) {
  // Strictly in bucket order, the same on every rank: collectives are matched by sequence.
  while (next_bucket_ < buckets_.size() && pending_[next_bucket_] == 0) {
    work_[next_bucket_] = comm_.AllReduceAsync(flat_[next_bucket_], ReduceOp::kAvg);
    ++next_bucket_;
    if (from_hook) ++stats_.launched_during_backward;
  }
}

void GradSync::Finish() {
  if (!in_backward_) return;
  torch::NoGradGuard no_grad;
  // Parameters that got no gradient in this backward (unused on this rank) contribute what they
  // accumulated in earlier no-sync micro-steps, or zero when they have no gradient at all.
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!ready_[i]) {
      ready_[i] = 1;
      StageGradient(i);
      --pending_[bucket_of_[i]];
    }
  }
  LaunchReadyBuckets(/*from_hook=*/false);
  double start = Now();
  for (auto& w : work_) w->Wait();
  stats_.wait_seconds += Now() - start;
  for (auto& w : work_) stats_.comm_seconds += w->seconds();
  // Gradients become views of the buckets (DDP's gradient_as_bucket_view): no copy back, and
  // while the caller zeroes rather than drops them, the next backward accumulates in place.
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& grad = params_[i].mutable_grad();
    if (!grad.defined() || grad.data_ptr() != views_[i].data_ptr()) grad = views_[i];
  }
  ++stats_.steps;
  std::fill(ready_.begin(), ready_.end(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) pending_[b] = buckets_[b].size();
  next_bucket_ = 0;
  in_backward_ = false;
}

}  // namespace reid::dist
