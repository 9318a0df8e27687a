// Sampler properties for world sizes 1..4: P distinct ids x K per batch, disjoint identity blocks
// per rank, identical global batches, equal step counts, resume equals uninterrupted.
#include "data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "base/status_test_util.h"

namespace reid::data {
namespace {

// 40 identities with 1..12 images each, interleaved as a real dataset would be.
std::vector<int> Labels() {
  std::vector<int> labels;
  for (int round = 0; round < 12; ++round) {
    for (int id = 0; id < 40; ++id) {
      if (round < 1 + id % 12) labels.push_back(id);
    }
  }
  return labels;
}

TEST(PkSampler, GlobalBatchesArePDistinctIdsTimesK) {
  const std::vector<int> labels = Labels();
  PkSampler s(labels, 8, 4, 1234);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto batches = s.GlobalBatches(epoch);
    ASSERT_GT(batches.size(), 5u);
    std::map<int, int> chunks_of_id;
    for (const auto& b : batches) {
      ASSERT_EQ(b.size(), 32u);
      std::set<int> ids;
      for (int j = 0; j < 8; ++j) {
        const int id = labels[b[j * 4]];
        for (int k = 1; k < 4; ++k) ASSERT_EQ(labels[b[j * 4 + k]], id);
        ids.insert(id);
        ++chunks_of_id[id];
      }
      ASSERT_EQ(ids.size(), 8u);
    }
    // No identity gives more chunks than max(n, K) / K (leftovers dropped).
    for (auto [id, chunks] : chunks_of_id) {
      const int n = static_cast<int>(std::count(labels.begin(), labels.end(), id));
      EXPECT_LE(chunks, std::max(n, 4) / 4) << "id " << id;
    }
  }
}

TEST(PkSampler, DeterministicFromSeedAndEpoch) {
  PkSampler a(Labels(), 8, 4, 7), b(Labels(), 8, 4, 7), c(Labels(), 8, 4, 8);
  EXPECT_EQ(a.GlobalBatches(3), b.GlobalBatches(3));
  EXPECT_NE(a.GlobalBatches(3), a.GlobalBatches(4));
  EXPECT_NE(a.GlobalBatches(3), c.GlobalBatches(3));
}

TEST(PkSampler, RanksTakeWholeIdentitiesOfTheSameGlobalBatch) {
  const std::vector<int> labels = Labels();
  for (int world = 1; world <= 4; ++world) {
    PkSampler reference(labels, 12, 4, 99);  // P = 12: whole ids for W = 1..4
    ASSERT_OK(reference.Validate(world)) << world;
    const auto global = reference.GlobalBatches(2);
    std::vector<std::vector<BatchPlan>> per_rank;
    for (int r = 0; r < world; ++r) {
      PkSampler own(labels, 12, 4, 99);  // every rank builds its own sampler
      per_rank.push_back(own.RankBatches(2, r, world));
      ASSERT_EQ(per_rank[r].size(), global.size()) << "equal step counts, world " << world;
    }
    for (size_t step = 0; step < global.size(); ++step) {
      std::vector<int64_t> joined, keys;
      std::set<int> seen_ids;
      for (int r = 0; r < world; ++r) {
        const BatchPlan& p = per_rank[r][step];
        ASSERT_EQ(p.indices.size(), static_cast<size_t>(12 / world * 4));
        std::set<int> ids;
        for (int64_t i : p.indices) ids.insert(labels[i]);
        ASSERT_EQ(ids.size(), static_cast<size_t>(12 / world));
        for (int id : ids) ASSERT_TRUE(seen_ids.insert(id).second) << "id on two ranks";
        joined.insert(joined.end(), p.indices.begin(), p.indices.end());
        keys.insert(keys.end(), p.keys.begin(), p.keys.end());
      }
      ASSERT_EQ(joined, global[step]) << "world " << world << " step " << step;
      std::vector<int64_t> want(48);
      std::iota(want.begin(), want.end(), static_cast<int64_t>(step) * 48);
      ASSERT_EQ(keys, want);  // augmentation keys: global positions, independent of world
    }
  }
}

TEST(PkSampler, ResumeEqualsUninterrupted) {
  PkSampler s(Labels(), 12, 4, 3);
  for (int world = 1; world <= 4; ++world) {
    for (int r = 0; r < world; ++r) {
      const auto full = s.RankBatches(5, r, world);
      for (int64_t start : {int64_t{0}, int64_t{3}, static_cast<int64_t>(full.size())}) {
        const auto resumed = s.RankBatches(5, r, world, start);
        ASSERT_EQ(resumed.size(), full.size() - start);
        for (size_t i = 0; i < resumed.size(); ++i) {
          EXPECT_EQ(resumed[i].step, full[start + i].step);
          EXPECT_EQ(resumed[i].indices, full[start + i].indices);
          EXPECT_EQ(resumed[i].keys, full[start + i].keys);
        }
      }
    }
  }
}

TEST(PkSampler, ValidateNamesTheProblem) {
  PkSampler s(Labels(), 6, 4, 1);
  const Status on4 = s.Validate(4);
  EXPECT_EQ(on4.exit_code(), 2);  // a user error, before any collective
  EXPECT_NE(on4.message().find("multiple of the world size"), std::string::npos);
  // The recipe: the smallest fitting P (8 for 6 on 4 ranks), K kept, lr scaled.
  EXPECT_NE(on4.message().find("stage2 { ids_per_batch: 8 ims_per_batch: 32 }"), std::string::npos)
      << on4.message();
  EXPECT_NE(on4.message().find("scale base_lr by 8/6"), std::string::npos);
  // More ranks than identities: no P fits.
  const Status on64 = s.Validate(64);
  EXPECT_NE(on64.message().find("allow at most 40 ranks"), std::string::npos) << on64.message();
  PkSampler too_many(Labels(), 64, 4, 1);
  EXPECT_NE(too_many.Validate(1).message().find("exceeds the 40"), std::string::npos);
}

TEST(Stage1, GlobalBatchesArePermutation) {
  const auto batches = Stage1GlobalBatches(203, 64, 11, 4);
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches.back().size(), 203u % 64);
  std::vector<int64_t> all;
  for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 203; ++i) ASSERT_EQ(all[i], i);
  EXPECT_EQ(Stage1GlobalBatches(128, 64, 1, 0).size(), 2u);  // no empty last batch
  EXPECT_NE(Stage1GlobalBatches(100, 64, 1, 0), Stage1GlobalBatches(100, 64, 1, 1));
}

TEST(InferencePlans, CoverTheRangeInOrder) {
  std::vector<int64_t> joined;
  for (const auto& [begin, end] : std::vector<std::pair<int64_t, int64_t>>{{0, 35}, {35, 103}}) {
    const std::vector<BatchPlan> plans = InferencePlans(begin, end, 10);
    for (size_t s = 0; s < plans.size(); ++s) {
      EXPECT_EQ(plans[s].step, static_cast<int64_t>(s));
      EXPECT_EQ(plans[s].indices.size(), s + 1 < plans.size() ? 10u : (end - begin - 1) % 10 + 1);
      EXPECT_EQ(plans[s].keys, plans[s].indices);
      joined.insert(joined.end(), plans[s].indices.begin(), plans[s].indices.end());
    }
  }
  ASSERT_EQ(joined.size(), 103u);
  for (int64_t i = 0; i < 103; ++i) ASSERT_EQ(joined[i], i);
  EXPECT_TRUE(InferencePlans(7, 7, 10).empty());
}

}  // namespace
}  // namespace reid::data
