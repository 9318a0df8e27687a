// gtest assertions for Status and StatusOr<T> (as Abseil's status matchers): EXPECT_OK(expr) and
// ASSERT_OK(expr) pass when the result is OK and otherwise print the expression and its message.
#pragma once

#include <gtest/gtest.h>

#include "base/status.h"

namespace reid::status_internal {

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const StatusOr<T>& s) {
  return s.status();
}

inline ::testing::AssertionResult IsOk(const char* expr, const Status& s) {
  if (s.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << expr << " is not OK: " << s.message();
}

}  // namespace reid::status_internal

#define EXPECT_OK(expr) \
  EXPECT_PRED_FORMAT1(::reid::status_internal::IsOk, ::reid::status_internal::StatusOf(expr))
#define ASSERT_OK(expr) \
  ASSERT_PRED_FORMAT1(::reid::status_internal::IsOk, ::reid::status_internal::StatusOf(expr))
