#include "trainer/trainer.h"

#include <gtest/gtest.h>

namespace reid::trainer {
namespace {

TEST(StepCheckpointDue, EveryPeriodOfOptimiserStepsAndNeverWhenOff) {
  std::vector<int64_t> due;
  for (int64_t step = 0; step <= 10; ++step) {
    if (StepCheckpointDue(4, step)) due.push_back(step);
  }
  EXPECT_EQ(due, (std::vector<int64_t>{4, 8}));
  for (int64_t step = 0; step <= 10; ++step) EXPECT_FALSE(StepCheckpointDue(0, step));
  EXPECT_TRUE(StepCheckpointDue(1, 1));
  EXPECT_FALSE(StepCheckpointDue(1, 0));  // no step taken yet
}

}  // namespace
}  // namespace reid::trainer
