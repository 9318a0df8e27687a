// Tests for Status, StatusOr, the REID_* macros and the EXPECT_OK / ASSERT_OK assertions.
#include "base/status.h"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "base/status_test_util.h"

namespace reid {
namespace {

TEST(Status, DefaultIsOk) {
  const Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Status::Code::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_FALSE(s.is_user_error());
  EXPECT_EQ(s.exit_code(), 0);
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(Status, EachCodeMapsToItsExitStatus) {
  struct Case {
    Status status;
    Status::Code code;
    bool user_error;
    int exit_code;
  };
  const std::vector<Case> cases = {
      {Status::InvalidArgument("a"), Status::Code::kInvalidArgument, true, 2},
      {Status::NotFound("b"), Status::Code::kNotFound, true, 2},
      {Status::DataLoss("c"), Status::Code::kDataLoss, true, 2},
      {Status::Internal("d"), Status::Code::kInternal, false, 1},
  };
  for (const Case& c : cases) {
    EXPECT_FALSE(c.status.ok()) << c.status.message();
    EXPECT_EQ(c.status.code(), c.code) << c.status.message();
    EXPECT_EQ(c.status.is_user_error(), c.user_error) << c.status.message();
    EXPECT_EQ(c.status.exit_code(), c.exit_code) << c.status.message();
  }
  EXPECT_EQ(Status::NotFound("no such file 'x'").message(), "no such file 'x'");
}

TEST(Status, AnnotatePrependsContextAndKeepsTheCode) {
  const Status s = Status::DataLoss("bad CRC").Annotate("model.pt");
  EXPECT_EQ(s.code(), Status::Code::kDataLoss);
  EXPECT_EQ(s.message(), "model.pt: bad CRC");
  EXPECT_EQ(s.Annotate("--resume").message(), "--resume: model.pt: bad CRC");
  const Status ok = Status::Ok().Annotate("ignored");
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.message(), "");
}

TEST(StatusOr, HoldsAValueOrAnError) {
  StatusOr<std::string> value = std::string("text");
  ASSERT_TRUE(value.ok());
  EXPECT_TRUE(value.status().ok());
  EXPECT_EQ(*value, "text");
  EXPECT_EQ(value->size(), 4u);
  value.value() += "!";
  EXPECT_EQ(value.value(), "text!");

  const StatusOr<std::string> error = Status::NotFound("no such file");
  EXPECT_FALSE(error.ok());
  EXPECT_EQ(error.status().code(), Status::Code::kNotFound);
  EXPECT_EQ(error.status().message(), "no such file");
}

TEST(StatusOr, MovesOutMoveOnlyValues) {
  StatusOr<std::unique_ptr<int>> p = std::make_unique<int>(7);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> taken = *std::move(p);
  ASSERT_NE(taken, nullptr);
  EXPECT_EQ(*taken, 7);
}

TEST(StatusOrDeathTest, MisuseIsAnInvariantFailure) {
  // A value read from an error, or a StatusOr built from an OK status, is a bug: CHECK.
  EXPECT_DEATH(
      {
        StatusOr<int> error = Status::Internal("the reason");
        (void)error.value();
      },
      "the reason");
  EXPECT_DEATH({ StatusOr<int> bad = Status::Ok(); }, "OK status without a value");
}

// Helpers for the macros: each counts its calls, so a test can tell what ran.
struct Calls {
  int steps = 0;
};

Status Step(Calls* calls, Status result) {
  ++calls->steps;
  return result;
}

StatusOr<int> Number(Calls* calls, StatusOr<int> result) {
  ++calls->steps;
  return result;
}

Status TwoSteps(Calls* calls, Status first, Status second) {
  REID_RETURN_IF_ERROR(Step(calls, first));
  REID_RETURN_IF_ERROR(Step(calls, second));
  return Status::Ok();
}

TEST(StatusMacros, ReturnIfErrorStopsAtTheFirstError) {
  Calls all;
  EXPECT_OK(TwoSteps(&all, Status::Ok(), Status::Ok()));
  EXPECT_EQ(all.steps, 2);

  Calls first;
  const Status s = TwoSteps(&first, Status::NotFound("first"), Status::Internal("second"));
  EXPECT_EQ(s.code(), Status::Code::kNotFound);
  EXPECT_EQ(s.message(), "first");
  EXPECT_EQ(first.steps, 1);  // evaluated once, and the second step never ran
}

// Two REID_ASSIGN_OR_RETURN in one scope (distinct temporaries), into a declaration and into an
// existing variable.
StatusOr<int> Sum(Calls* calls, StatusOr<int> a, StatusOr<int> b) {
  REID_ASSIGN_OR_RETURN(const int x, Number(calls, a));
  int y = 0;
  REID_ASSIGN_OR_RETURN(y, Number(calls, b));
  return x + y;
}

TEST(StatusMacros, AssignOrReturnMovesTheValueOrReturnsTheStatus) {
  Calls both;
  const StatusOr<int> sum = Sum(&both, 2, 3);
  ASSERT_OK(sum);
  EXPECT_EQ(*sum, 5);
  EXPECT_EQ(both.steps, 2);

  Calls failed;
  const StatusOr<int> error = Sum(&failed, Status::DataLoss("truncated"), 3);
  EXPECT_EQ(error.status().code(), Status::Code::kDataLoss);
  EXPECT_EQ(error.status().message(), "truncated");
  EXPECT_EQ(failed.steps, 1);

  Calls second;
  EXPECT_EQ(Sum(&second, 2, Status::InvalidArgument("b")).status().message(), "b");
  EXPECT_EQ(second.steps, 2);
}

StatusOr<std::unique_ptr<int>> MakeInt(int v) { return std::make_unique<int>(v); }

StatusOr<int> Deref() {
  REID_ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(4));  // move-only through the macro
  return *p;
}

TEST(StatusMacros, AssignOrReturnTakesMoveOnlyValues) {
  const StatusOr<int> v = Deref();
  ASSERT_OK(v);
  EXPECT_EQ(*v, 4);
}

TEST(StatusTestUtil, ExpectOkPassesOnOkAndReportsTheMessageOtherwise) {
  EXPECT_OK(Status::Ok());
  EXPECT_OK(StatusOr<int>(1));
  EXPECT_NONFATAL_FAILURE(EXPECT_OK(Status::InvalidArgument("seed = -1: must be >= 0")),
                          "seed = -1: must be >= 0");
  EXPECT_NONFATAL_FAILURE(EXPECT_OK(StatusOr<int>(Status::NotFound("gone"))), "is not OK: gone");
  EXPECT_FATAL_FAILURE(ASSERT_OK(Status::Internal("disk full")), "disk full");
}

}  // namespace
}  // namespace reid
