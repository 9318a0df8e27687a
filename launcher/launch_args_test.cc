// Unit tests of reid-launch's flag parsing.
#include "launcher/launch_args.h"

#include <gtest/gtest.h>

#include "base/status_test_util.h"

namespace reid::launcher {
namespace {

using Args = std::vector<std::string>;

TEST(LaunchArgsTest, FlagsThenCommandAfterDoubleDash) {
  StatusOr<LaunchArgs> a = ParseLaunchArgs(
      {"--nproc_per_node=2", "--max_restarts", "3", "--hostfile=hosts", "--mpirun=/opt/mpirun",
       "--restart_delay_s=0.5", "--", "reid", "train", "--config=c", "--max_restarts=9"});
  ASSERT_OK(a);
  EXPECT_EQ(a->nproc_per_node, 2);
  EXPECT_EQ(a->max_restarts, 3);
  EXPECT_EQ(a->hostfile, "hosts");
  EXPECT_EQ(a->mpirun, "/opt/mpirun");
  EXPECT_DOUBLE_EQ(a->restart_delay_s, 0.5);
  EXPECT_EQ(a->backend, Backend::kAuto);
  // Everything after `--` belongs to the trainer, flags that look like ours included.
  EXPECT_EQ(a->command, (Args{"reid", "train", "--config=c", "--max_restarts=9"}));
}

TEST(LaunchArgsTest, DefaultsAndCommandWithoutDoubleDash) {
  StatusOr<LaunchArgs> a = ParseLaunchArgs({"reid", "train", "--output_dir=x"});
  ASSERT_OK(a);
  EXPECT_EQ(a->nproc_per_node, 0);  // = one per visible GPU
  EXPECT_EQ(a->max_restarts, 0);
  EXPECT_EQ(a->mpirun, "mpirun");
  EXPECT_EQ(a->command, (Args{"reid", "train", "--output_dir=x"}));
}

TEST(LaunchArgsTest, OversubscribeIsASwitch) {
  EXPECT_FALSE(ParseLaunchArgs({"--", "x"})->oversubscribe);
  StatusOr<LaunchArgs> a = ParseLaunchArgs({"--oversubscribe", "reid", "train"});
  ASSERT_OK(a);
  EXPECT_TRUE(a->oversubscribe);
  EXPECT_EQ(a->command, (Args{"reid", "train"}));  // the next argument is not its value
  EXPECT_FALSE(ParseLaunchArgs({"--oversubscribe=false", "--", "x"})->oversubscribe);
  EXPECT_EQ(ParseLaunchArgs({"--oversubscribe=2", "--", "x"}).status().message(),
            "--oversubscribe=2: expected true or false");
}

TEST(LaunchArgsTest, LauncherChoice) {
  EXPECT_EQ(ParseLaunchArgs({"--launcher=srun", "--", "x"})->backend, Backend::kSrun);
  EXPECT_EQ(ParseLaunchArgs({"--launcher=mpirun", "--", "x"})->backend, Backend::kMpirun);
  EXPECT_FALSE(ParseLaunchArgs({"--launcher=torchrun", "--", "x"}).ok());
}

TEST(LaunchArgsTest, ErrorsNameTheFlagAndValue) {
  auto message = [](const Args& args) { return ParseLaunchArgs(args).status().message(); };
  EXPECT_EQ(message({"--nproc_per_node=0", "--", "x"}), "--nproc_per_node=0: must be at least 1");
  EXPECT_EQ(message({"--nproc_per_node=two", "--", "x"}),
            "--nproc_per_node=two: expected a whole number >= 0");
  EXPECT_EQ(message({"--max_restarts=-1", "--", "x"}),
            "--max_restarts=-1: expected a whole number >= 0");
  EXPECT_EQ(message({"--restart_delay_s=nan", "--", "x"}),
            "--restart_delay_s=nan: expected seconds in [0, 86400]");
  EXPECT_EQ(message({"--max_restarts"}), "--max_restarts: needs a value");
  EXPECT_NE(message({"--nprocs=2", "--", "x"}).find("unknown flag --nprocs"), std::string::npos);
  EXPECT_EQ(ParseLaunchArgs({"--nproc_per_node=2", "--", "x"}).status().exit_code(), 0);
  EXPECT_EQ(ParseLaunchArgs({"--nprocs=2", "--", "x"}).status().exit_code(), 2);
}

TEST(LaunchArgsTest, NoCommandIsAnErrorUnlessHelp) {
  EXPECT_NE(ParseLaunchArgs({}).status().message().find("no command"), std::string::npos);
  EXPECT_NE(ParseLaunchArgs({"--nproc_per_node=2", "--"}).status().message().find("no command"),
            std::string::npos);
  StatusOr<LaunchArgs> help = ParseLaunchArgs({"--help"});
  ASSERT_OK(help);
  EXPECT_TRUE(help->help);
}

}  // namespace
}  // namespace reid::launcher
