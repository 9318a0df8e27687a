// DDP's bucket assignment: the small first bucket, the cap, reverse order, one dtype per bucket.
#include "trainer/distributed/bucket_assignment.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace reid::dist {
namespace {

TEST(BucketAssignmentTest, FirstBucketSmallThenCapInReverse) {
  const int64_t mib = 1 << 20;
  // Parameters in registration order: 0.5, 0.6, 10, 10, 10, 0.1 MiB, all float32.
  std::vector<int64_t> bytes = {mib / 2, mib * 6 / 10, 10 * mib, 10 * mib, 10 * mib, mib / 10};
  auto buckets = AssignBuckets(bytes, std::vector<int>(bytes.size(), 0), mib, 25 * mib);
  // First bucket closes once >= 1 MiB: {0, 1}; then {2, 3, 4} reaches 30 MiB >= 25; then {5}.
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0], (std::vector<size_t>{5}));
  EXPECT_EQ(buckets[1], (std::vector<size_t>{2, 3, 4}));
  EXPECT_EQ(buckets[2], (std::vector<size_t>{0, 1}));
}

TEST(BucketAssignmentTest, DtypesNeverShareABucket) {
  auto buckets = AssignBuckets({4, 8, 4, 8}, {0, 1, 0, 1}, 1 << 20, 25 << 20);
  ASSERT_EQ(buckets.size(), 2u);
  EXPECT_EQ(buckets[0], (std::vector<size_t>{1, 3}));
  EXPECT_EQ(buckets[1], (std::vector<size_t>{0, 2}));
}

TEST(BucketAssignmentTest, EveryParameterExactlyOnce) {
  std::vector<int64_t> bytes;
  for (int i = 0; i < 100; ++i) bytes.push_back((i * 7919) % 5000 + 1);
  auto buckets = AssignBuckets(bytes, std::vector<int>(100, 0), 3000, 20000);
  std::vector<int> seen(100, 0);
  for (const auto& b : buckets) {
    for (size_t i : b) seen[i]++;
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[i], 1) << i;
  EXPECT_GT(buckets.size(), 5u);
}

}  // namespace
}  // namespace reid::dist
