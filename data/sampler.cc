// PK sampler, stage-1 permutation sampler and inference sharding.
#include "data/sampler.h"

#include <glog/logging.h>

#include <algorithm>
#include <numeric>
#include <utility>

#include "data/rng.h"

namespace reid::data {
namespace {

template <typename T>
void Shuffle(std::vector<T>* v, Rng* rng) {
  for (int64_t i = static_cast<int64_t>(v->size()) - 1; i > 0; --i) {
    std::swap((*v)[i], (*v)[rng->UniformInt(0, i)]);
  }
}

}  // namespace

PkSampler::PkSampler(std::vector<int> labels, int ids_per_batch, int num_instances, uint64_t seed)
    : p_(ids_per_batch), k_(num_instances), seed_(seed) {
  CHECK_GT(p_, 0) << "PkSampler: ids_per_batch";
  CHECK_GT(k_, 0) << "PkSampler: num_instances";
  for (size_t i = 0; i < labels.size(); ++i) {
    CHECK_GE(labels[i], 0) << "PkSampler: sample " << i << " has a negative label";
    if (static_cast<size_t>(labels[i]) >= by_label_.size()) by_label_.resize(labels[i] + 1);
    by_label_[labels[i]].push_back(static_cast<int64_t>(i));
  }
}

Status PkSampler::Validate(int world_size) const {
  int64_t ids = 0;
  for (const auto& v : by_label_) ids += !v.empty();
  if (world_size < 1) {
    return Status::InvalidArgument("world size " + std::to_string(world_size) +
                                   ": must be at least 1");
  }
  if (p_ % world_size != 0) {
    // Each rank takes whole identities: the global batch has to grow with the world (the recipe
    // of docs/scaling.md: the smallest fitting P, K kept, lr scaled with the global batch).
    const int64_t p_fit = (static_cast<int64_t>(p_) + world_size - 1) / world_size * world_size;
    std::string msg = "stage2.ids_per_batch = " + std::to_string(p_) +
                      " must be a multiple of the world size " + std::to_string(world_size) +
                      " (each rank takes whole identities)";
    if (p_fit <= ids) {
      msg += ": for " + std::to_string(world_size) + " ranks set stage2 { ids_per_batch: " +
             std::to_string(p_fit) + " ims_per_batch: " + std::to_string(p_fit * k_) +
             " } and scale base_lr by " + std::to_string(p_fit) + "/" + std::to_string(p_) +
             " (docs/scaling.md)";
    } else {
      msg += ": the " + std::to_string(ids) + " training identities allow at most " +
             std::to_string(ids) + " ranks (docs/scaling.md)";
    }
    return Status::InvalidArgument(msg);
  }
  if (ids < p_) {
    return Status::InvalidArgument("stage2.ids_per_batch = " + std::to_string(p_) +
                                   " exceeds the " + std::to_string(ids) + " training identities");
  }
  return Status::Ok();
}

std::vector<std::vector<int64_t>> PkSampler::GlobalBatches(int64_t epoch) const {
  Rng rng(seed_, static_cast<uint64_t>(epoch), 0, RngStream::kPkSampler);
  // Per identity: its K-chunks, in shuffled order (consumed from chunk_pos).
  std::vector<std::vector<int64_t>> chunks(by_label_.size());
  std::vector<size_t> chunk_pos(by_label_.size(), 0);
  std::vector<int> available;
  for (size_t id = 0; id < by_label_.size(); ++id) {
    if (by_label_[id].empty()) continue;
    std::vector<int64_t> idxs = by_label_[id];
    if (static_cast<int>(idxs.size()) < k_) {
      std::vector<int64_t> drawn(k_);
      for (int64_t& d : drawn) d = idxs[rng.UniformInt(0, idxs.size() - 1)];
      idxs = std::move(drawn);
    }
    Shuffle(&idxs, &rng);
    idxs.resize(idxs.size() / k_ * k_);  // leftovers dropped
    chunks[id] = std::move(idxs);
    available.push_back(static_cast<int>(id));
  }
  std::vector<std::vector<int64_t>> batches;
  while (static_cast<int>(available.size()) >= p_) {
    // P distinct identities: a partial Fisher-Yates shuffle moves them to the front.
    for (int j = 0; j < p_; ++j) {
      std::swap(available[j], available[rng.UniformInt(j, available.size() - 1)]);
    }
    std::vector<int64_t> batch;
    batch.reserve(static_cast<size_t>(p_) * k_);
    std::vector<int> exhausted;
    for (int j = 0; j < p_; ++j) {
      const int id = available[j];
      const auto begin = chunks[id].begin() + chunk_pos[id];
      batch.insert(batch.end(), begin, begin + k_);
      chunk_pos[id] += k_;
      if (chunk_pos[id] == chunks[id].size()) exhausted.push_back(id);
    }
    for (int id : exhausted) {
      available.erase(std::find(available.begin(), available.end(), id));
    }
    batches.push_back(std::move(batch));
  }
  return batches;
}

std::vector<BatchPlan> PkSampler::RankBatches(int64_t epoch, int rank, int world_size,
                                              int64_t start_step) const {
  const Status valid = Validate(world_size);
  CHECK(valid.ok()) << valid.message();
  CHECK(rank >= 0 && rank < world_size) << "rank " << rank << " of " << world_size;
  const std::vector<std::vector<int64_t>> global = GlobalBatches(epoch);
  const int64_t per_rank = static_cast<int64_t>(p_ / world_size) * k_;
  const int64_t global_size = static_cast<int64_t>(p_) * k_;
  std::vector<BatchPlan> plans;
  for (int64_t step = std::max<int64_t>(0, start_step); step < static_cast<int64_t>(global.size());
       ++step) {
    BatchPlan plan;
    plan.step = step;
    const int64_t offset = rank * per_rank;
    plan.indices.assign(global[step].begin() + offset, global[step].begin() + offset + per_rank);
    for (int64_t j = 0; j < per_rank; ++j) plan.keys.push_back(step * global_size + offset + j);
    plans.push_back(std::move(plan));
  }
  return plans;
}

std::vector<std::vector<int64_t>> Stage1GlobalBatches(int64_t n, int batch, uint64_t seed,
                                                      int64_t epoch) {
  CHECK_GT(batch, 0) << "Stage1GlobalBatches: batch";
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(seed, static_cast<uint64_t>(epoch), 0, RngStream::kStage1);
  Shuffle(&perm, &rng);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t b = 0; b < n; b += batch) {
    batches.emplace_back(perm.begin() + b, perm.begin() + std::min<int64_t>(n, b + batch));
  }
  return batches;
}

std::vector<BatchPlan> InferencePlans(int64_t begin_item, int64_t end_item, int batch) {
  CHECK_GT(batch, 0) << "InferencePlans: batch";
  std::vector<BatchPlan> plans;
  for (int64_t begin = begin_item; begin < end_item; begin += batch) {
    BatchPlan plan;
    plan.step = static_cast<int64_t>(plans.size());
    for (int64_t i = begin; i < std::min(end_item, begin + batch); ++i) {
      plan.indices.push_back(i);
      plan.keys.push_back(i);
    }
    plans.push_back(std::move(plan));
  }
  return plans;
}

}  // namespace reid::data
