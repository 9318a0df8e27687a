// Samplers: the identity-balanced PK sampler of stage 2 (reference algorithm, deterministic from
// (seed, epoch), whole identities per rank), the stage-1 permutation sampler and inference shards.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace reid::data {

// One step's worth of samples for one rank.
struct BatchPlan {
  int64_t step = 0;
  std::vector<int64_t> indices;  // dataset indices, in batch order
  std::vector<int64_t> keys;     // augmentation keys: position in the epoch's global order
};

// Reference RandomIdentitySampler made deterministic: per identity, its indices (drawn K times
// with replacement when it has fewer than K) are shuffled and cut into K-chunks, leftovers
// dropped; while at least P identities have chunks left, P distinct ones are drawn and each
// gives its next chunk. Each global batch = P ids x K images, identical on every rank.
class PkSampler {
 public:
  // labels[i] = train label of sample i (0..N-1). P = ids per global batch, K = images per id.
  PkSampler(std::vector<int> labels, int ids_per_batch, int num_instances, uint64_t seed);

  // OK if (P, K, world) can be used with these labels, else InvalidArgument naming the values
  // (and, for a world size that does not divide P, the config that fits).
  Status Validate(int world_size) const;

  // Every global batch of `epoch` (P * K indices each; ids in blocks of K).
  std::vector<std::vector<int64_t>> GlobalBatches(int64_t epoch) const;

  // Rank r's batches from `start_step` on: identities [r P/W, (r+1) P/W) of each global batch,
  // so every rank has the same number of steps. Resume at (epoch, step) = start_step.
  std::vector<BatchPlan> RankBatches(int64_t epoch, int rank, int world_size,
                                     int64_t start_step = 0) const;

  // Steps per epoch (the same on every rank).
  int64_t StepsPerEpoch(int64_t epoch) const { return GlobalBatches(epoch).size(); }

  int ids_per_batch() const { return p_; }
  int num_instances() const { return k_; }

 private:
  std::vector<std::vector<int64_t>> by_label_;  // indices of each label, dataset order
  int p_, k_;
  uint64_t seed_;
};

// Stage 1: a permutation of n seeded by (seed, epoch), cut into global batches of `batch` (the
// last one partial, none empty), each split across ranks in contiguous parts.
std::vector<std::vector<int64_t>> Stage1GlobalBatches(int64_t n, int batch, uint64_t seed,
                                                      int64_t epoch);

// The loader plans of items [begin, end) (a rank's shard: dist::InferenceShard), in order,
// `batch` per step (the last partial).
std::vector<BatchPlan> InferencePlans(int64_t begin, int64_t end, int batch);

}  // namespace reid::data
