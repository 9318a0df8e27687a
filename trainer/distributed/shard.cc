#include "trainer/distributed/shard.h"

#include <glog/logging.h>

#include <algorithm>

namespace reid::dist {

ShardRange InferenceShard(int64_t n, int rank, int world_size) {
  CHECK(world_size > 0 && rank >= 0 && rank < world_size)
      << "rank " << rank << " of " << world_size;
  const int64_t base = n / world_size, extra = n % world_size;
  ShardRange r;
  r.begin = rank * base + std::min<int64_t>(rank, extra);
  r.end = r.begin + base + (rank < extra ? 1 : 0);
  return r;
}

std::vector<int64_t> InferenceShardCounts(int64_t n, int world_size) {
  std::vector<int64_t> counts;
  for (int r = 0; r < world_size; ++r) {
    const ShardRange s = InferenceShard(n, r, world_size);
    counts.push_back(s.end - s.begin);
  }
  return counts;
}

std::vector<int64_t> SplitByRank(const std::vector<int64_t>& global, int rank, int world_size) {
  const ShardRange r = InferenceShard(static_cast<int64_t>(global.size()), rank, world_size);
  return std::vector<int64_t>(global.begin() + r.begin, global.begin() + r.end);
}

}  // namespace reid::dist
