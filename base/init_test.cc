// Tests for per-rank log files.
#include "base/init.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/build_info.h"

namespace reid::base {
namespace {

TEST(SetupRunLogging, WritesRankFileInRunDirectory) {
  GlobalInit("base_test");
  const auto dir = std::filesystem::temp_directory_path() / ("reid_log_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const std::string path = SetupRunLogging(dir.string(), 3);
  EXPECT_EQ(path, (dir / "logs" / "rank3.log").string());
  LOG(INFO) << "hello from the test";
  LOG(WARNING) << "a warning";
  google::FlushLogFiles(google::GLOG_INFO);
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("hello from the test"), std::string::npos);
  EXPECT_NE(text.str().find("a warning"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// An exception that escapes a thread ends the process with one line and status 1, not SIGABRT.
TEST(TerminateHandlerDeathTest, EscapedExceptionIsOneLineAndStatus1) {
  EXPECT_EXIT(
      {
        InstallTerminateHandler("reid train");
        std::thread([] { throw std::runtime_error("cannot allocate\nException raised from x"); })
            .join();
      },
      testing::ExitedWithCode(1), "^error: reid train: cannot allocate\n$");
  EXPECT_EXIT(
      {
        InstallTerminateHandler("reid eval");
        std::thread([] { throw std::bad_alloc(); }).join();
      },
      testing::ExitedWithCode(1), "error: reid eval: out of memory \\(std::bad_alloc\\)");
  EXPECT_EXIT(
      {
        InstallTerminateHandler("reid x");
        std::terminate();
      },
      testing::ExitedWithCode(1), "error: reid x: std::terminate called without an active");
}

TEST(BuildInfo, VersionAndShaAreFilled) {
  EXPECT_FALSE(Version().empty());
  EXPECT_FALSE(GitSha().empty());
  EXPECT_EQ(GitSha().find('@'), std::string::npos);
}

}  // namespace
}  // namespace reid::base
