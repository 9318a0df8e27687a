// Tests for per-rank log files.
#include "base/init.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

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

TEST(BuildInfo, VersionAndShaAreFilled) {
  EXPECT_FALSE(Version().empty());
  EXPECT_FALSE(GitSha().empty());
  EXPECT_EQ(GitSha().find('@'), std::string::npos);
}

}  // namespace
}  // namespace reid::base
