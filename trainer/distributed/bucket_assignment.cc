// DDP bucket assignment (see bucket_assignment.h).
#include "trainer/distributed/bucket_assignment.h"

#include <glog/logging.h>

#include <algorithm>
#include <map>

namespace reid::dist {

std::vector<std::vector<size_t>> AssignBuckets(const std::vector<int64_t>& bytes,
                                               const std::vector<int>& dtype_keys,
                                               int64_t first_limit, int64_t cap) {
  CHECK_EQ(bytes.size(), dtype_keys.size());
  struct Open {
    std::vector<size_t> indices;
    int64_t size = 0;
    bool first = true;
  };
  std::map<int, Open> open;
  std::vector<std::vector<size_t>> closed;
  for (size_t i = 0; i < bytes.size(); ++i) {
    Open& bucket = open[dtype_keys[i]];
    bucket.indices.push_back(i);
    bucket.size += bytes[i];
    if (bucket.size >= (bucket.first ? first_limit : cap)) {
      closed.push_back(std::move(bucket.indices));
      bucket.indices.clear();
      bucket.size = 0;
      bucket.first = false;
    }
  }
  for (auto& [key, bucket] : open) {
    if (!bucket.indices.empty()) closed.push_back(std::move(bucket.indices));
  }
  // Order by smallest index (as DDP), then reverse: last layers first.
  std::sort(closed.begin(), closed.end(),
            [](const auto& a, const auto& b) { return a.front() < b.front(); });
  std::reverse(closed.begin(), closed.end());
  return closed;
}

}  // namespace reid::dist
