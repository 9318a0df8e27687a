// How work is split between ranks: the one sharding rule of evaluation, feature extraction,
// stage 1's global batches and stage 2's text features. Rank r gets a contiguous range; sizes
// differ by at most one, lower ranks get the extra item, so concatenating the ranks' parts in
// rank order (an all-gather) restores the original order.
#pragma once

#include <cstdint>
#include <vector>

namespace reid::dist {

// Rank r's items [begin, end) of n.
struct ShardRange {
  int64_t begin = 0;
  int64_t end = 0;
};
ShardRange InferenceShard(int64_t n, int rank, int world_size);

// Every rank's shard size, in rank order (the counts of an all-gather-v).
std::vector<int64_t> InferenceShardCounts(int64_t n, int world_size);

// Rank r's contiguous part of `global` under the same rule.
std::vector<int64_t> SplitByRank(const std::vector<int64_t>& global, int rank, int world_size);

}  // namespace reid::dist
