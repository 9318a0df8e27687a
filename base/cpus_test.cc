// The affinity count follows the mask this process is given (as srun --cpus-per-task or taskset
// narrow it), not the machine's CPU count.
#include "base/cpus.h"

#include <gtest/gtest.h>
#include <sched.h>

namespace reid::base {
namespace {

TEST(CpusTest, AffinityFollowsTheMask) {
  const int all = AffinityCpuCount();
  EXPECT_GE(all, 1);
  EXPECT_LE(all, OnlineCpuCount());
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE && first < 0; ++c) {
    if (CPU_ISSET(c, &saved)) first = c;
  }
  ASSERT_GE(first, 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  EXPECT_EQ(AffinityCpuCount(), 1);
  EXPECT_GE(OnlineCpuCount(), all);  // the machine's count is unchanged
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
  EXPECT_EQ(AffinityCpuCount(), all);
}

}  // namespace
}  // namespace reid::base
