#include "trainer/distributed/shard.h"

#include <gtest/gtest.h>

#include <vector>

namespace reid::dist {
namespace {

TEST(InferenceShard, ContiguousAndOrderRestoring) {
  for (int world = 1; world <= 4; ++world) {
    for (int64_t n : {0, 1, 3, 10, 1001}) {
      int64_t expect_begin = 0;
      const auto counts = InferenceShardCounts(n, world);
      ASSERT_EQ(counts.size(), static_cast<size_t>(world));
      for (int r = 0; r < world; ++r) {
        const ShardRange s = InferenceShard(n, r, world);
        EXPECT_EQ(s.begin, expect_begin);
        EXPECT_EQ(s.end - s.begin, counts[r]);
        EXPECT_LE(counts[0] - counts[r], 1);
        EXPECT_GE(counts[0] - counts[r], 0);
        expect_begin = s.end;
      }
      EXPECT_EQ(expect_begin, n);
    }
  }
  // Lower ranks get the extra items: 10 over 4 ranks is 3, 3, 2, 2.
  EXPECT_EQ(InferenceShardCounts(10, 4), (std::vector<int64_t>{3, 3, 2, 2}));
}

TEST(SplitByRank, PartsConcatenateToTheWhole) {
  std::vector<int64_t> global;
  for (int64_t i = 0; i < 61; ++i) global.push_back(1000 - 7 * i);
  for (int world = 1; world <= 4; ++world) {
    std::vector<int64_t> joined;
    for (int r = 0; r < world; ++r) {
      const auto part = SplitByRank(global, r, world);
      EXPECT_LE(part.size(), (global.size() + world - 1) / world);
      joined.insert(joined.end(), part.begin(), part.end());
    }
    EXPECT_EQ(joined, global);
  }
}

}  // namespace
}  // namespace reid::dist
