#include "proto/reflection.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "proto/reid_config.pb.h"

namespace reid::proto {
namespace {

TEST(DiffFields, NamesDifferingLeavesByPath) {
  ReidConfig a, b;
  EXPECT_TRUE(DiffFields(a, b).empty());
  b.mutable_stage2()->set_base_lr(a.stage2().base_lr() * 2);
  b.set_name("other");
  const std::vector<std::string> diff = DiffFields(a, b);
  ASSERT_EQ(diff.size(), 2u);
  EXPECT_NE(std::find(diff.begin(), diff.end(), "name"), diff.end());
  EXPECT_NE(std::find(diff.begin(), diff.end(), "stage2.base_lr"), diff.end());
}

TEST(DiffFields, UnsetEqualsDefaultAndSetToDefaultIsNoDiff) {
  ReidConfig a, b;
  b.mutable_stage2()->set_base_lr(a.stage2().base_lr());
  EXPECT_TRUE(DiffFields(a, b).empty());
}

}  // namespace
}  // namespace reid::proto
