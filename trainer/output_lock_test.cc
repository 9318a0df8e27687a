// The output directory lock: a second holder is refused with the first one's PID and host; a
// holder that dies (killed, no clean-up) leaves a lock the next run takes over; a planted link is
// refused.
#include "trainer/output_lock.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "base/status_test_util.h"

namespace reid::trainer {
namespace {

namespace fs = std::filesystem;

class OutputLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/reid_lock_test_XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

std::string Host() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

TEST_F(OutputLockTest, SecondHolderIsRefusedWithTheFirstOnesPidAndHost) {
  const std::string run = dir_ + "/run";  // created by the lock
  auto first = OutputDirLock::Acquire(run);
  ASSERT_OK(first);
  EXPECT_EQ((*first)->path(), run + "/train.lock");
  EXPECT_EQ((*first)->previous_holder(), "");
  auto second = OutputDirLock::Acquire(run);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(second.status().message(), "--output_dir=" + run +
                                           " is in use by another reid train (pid " +
                                           std::to_string(getpid()) + " on host " + Host() +
                                           "; lock file " + run + "/train.lock)");
  first->reset();  // released: the next one takes it
  auto third = OutputDirLock::Acquire(run);
  ASSERT_OK(third);
  EXPECT_EQ((*third)->previous_holder(), "pid " + std::to_string(getpid()) + " on host " + Host());
}

TEST_F(OutputLockTest, LockOfAKilledHolderIsTakenOver) {
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = OutputDirLock::Acquire(dir_);
    char c = lock.ok() ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    pause();  // killed below, holding the lock
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  auto refused = OutputDirLock::Acquire(dir_);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("pid " + std::to_string(child) + " on host"),
            std::string::npos)
      << refused.status().message();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  auto taken = OutputDirLock::Acquire(dir_);
  ASSERT_OK(taken);
  EXPECT_EQ((*taken)->previous_holder(), "pid " + std::to_string(child) + " on host " + Host());
  close(ready[0]);
  close(ready[1]);
}

TEST_F(OutputLockTest, RefusesWhatIsNotADirectoryOrALockFile) {
  fs::create_symlink("/dev/null", dir_ + "/train.lock");
  auto link = OutputDirLock::Acquire(dir_);
  ASSERT_FALSE(link.ok());
  EXPECT_NE(link.status().message().find("cannot open the lock file"), std::string::npos)
      << link.status().message();
  const std::string file = dir_ + "/file";
  FILE* f = fopen(file.c_str(), "w");
  fclose(f);
  auto not_dir = OutputDirLock::Acquire(file);
  ASSERT_FALSE(not_dir.ok());
  EXPECT_EQ(not_dir.status().message(), "--output_dir=" + file + ": exists and is not a directory");
}

}  // namespace
}  // namespace reid::trainer
