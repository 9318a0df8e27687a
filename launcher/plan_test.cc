// Unit tests of reid-launch's plan: GPU counting, rank count, backend choice and the mpirun /
// srun command lines of each attempt.
#include "launcher/plan.h"

#include <gtest/gtest.h>

#include <fstream>

#include <map>

namespace reid::launcher {
namespace {

using Args = std::vector<std::string>;

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

const Args kDev = {"null", "nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-caps", "tty"};

TEST(PlanTest, CountsGpuDevicesOrCudaVisibleDevices) {
  EXPECT_EQ(CountVisibleGpus(FakeEnv({}), kDev), 2);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({}), {"null", "tty"}), 0);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", "3"}}), kDev), 1);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", "0,1,2"}}), {}), 3);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", "GPU-a1,GPU-b2"}}), {}), 2);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", ""}}), kDev), 0);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", "0,-1,1"}}), kDev), 1);
  EXPECT_EQ(CountVisibleGpus(FakeEnv({{"CUDA_VISIBLE_DEVICES", "NoDevFiles"}}), kDev), 0);
}

TEST(PlanTest, ProcsPerNode) {
  LaunchArgs a;
  EXPECT_EQ(*ProcsPerNode(a, 8), 8);  // default: one per GPU
  EXPECT_EQ(*ProcsPerNode(a, 0), 1);  // none: one CPU rank
  a.nproc_per_node = 4;
  EXPECT_EQ(*ProcsPerNode(a, 8), 4);
  EXPECT_EQ(*ProcsPerNode(a, 0), 4);  // CPU ranks (MPI CPU backend) are allowed
  a.nproc_per_node = 9;
  StatusOr<int> too_many = ProcsPerNode(a, 8);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().exit_code(), 2);
  EXPECT_NE(too_many.status().message().find("--nproc_per_node=9: only 8 GPU(s) visible"),
            std::string::npos);
}

TEST(PlanTest, HostfileNodes) {
  EXPECT_EQ(*CountHostfileNodes("# cluster\nnode1 slots=8\nnode2 slots=8\n\nnode1\n", "h"), 2);
  EXPECT_EQ(*CountHostfileNodes("localhost", "h"), 1);
  EXPECT_EQ(CountHostfileNodes("# nothing\n\n", "hosts.txt").status().message(),
            "--hostfile=hosts.txt: names no node");
}

TEST(PlanTest, BackendFollowsSlurmAllocation) {
  LaunchArgs a;
  EXPECT_EQ(ChooseBackend(a, FakeEnv({})), Backend::kMpirun);
  EXPECT_EQ(ChooseBackend(a, FakeEnv({{"SLURM_JOB_ID", "42"}})), Backend::kSrun);
  a.hostfile = "hosts";  // an explicit hostfile means mpirun even inside an allocation
  EXPECT_EQ(ChooseBackend(a, FakeEnv({{"SLURM_JOB_ID", "42"}})), Backend::kMpirun);
  a.hostfile.clear();
  a.backend = Backend::kMpirun;
  EXPECT_EQ(ChooseBackend(a, FakeEnv({{"SLURM_JOB_ID", "42"}})), Backend::kMpirun);
}

TEST(PlanTest, ExportedEnvironment) {
  EXPECT_EQ(
      ExportedEnvNames({"HOME", "NCCL_IB_HCA", "PATH", "CUDA_VISIBLE_DEVICES", "OMPI_X",
                        "REID_TEST_STOP_AT", "NCCL_DEBUG", "PYTHONPATH"}),
      (Args{"CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "NCCL_IB_HCA", "PATH", "REID_TEST_STOP_AT"}));
  EXPECT_EQ(DefaultJobEnv(FakeEnv({})).size(), 1u);
  EXPECT_EQ(DefaultJobEnv(FakeEnv({})).front().first, "NCCL_DEBUG");
  EXPECT_TRUE(DefaultJobEnv(FakeEnv({{"NCCL_DEBUG", "INFO"}})).empty());
}

TEST(PlanTest, ResumeAutoAppendedOnce) {
  const Args cmd = {"reid", "train", "--output_dir=d"};
  EXPECT_EQ(WithResumeAuto(cmd), (Args{"reid", "train", "--output_dir=d", "--resume=auto"}));
  EXPECT_EQ(WithResumeAuto(WithResumeAuto(cmd)), WithResumeAuto(cmd));
  EXPECT_EQ(WithResumeAuto({"reid", "train", "--resume", "auto"}),
            (Args{"reid", "train", "--resume", "auto"}));
  // An explicit checkpoint is overridden by the later flag: restarts take the newest one.
  EXPECT_EQ(WithResumeAuto({"reid", "train", "--resume=/ck/s1-5"}),
            (Args{"reid", "train", "--resume=/ck/s1-5", "--resume=auto"}));
}

TEST(PlanTest, RestartKeepsAnExplicitCheckpointUntilTheRunHasItsOwn) {
  const Args cmd = {"reid", "train", "--output_dir=d", "--resume=/ck/s1-5", "--start_stage=2"};
  auto none = [](const std::string&) { return false; };
  auto index = [](const std::string& p) { return p == "d/checkpoints/index.txtpb"; };
  EXPECT_EQ(RestartCommand(cmd, none), cmd);  // failed before its first checkpoint: PATH again
  EXPECT_EQ(RestartCommand(cmd, index), WithResumeAuto(cmd));
  const Args split = {"reid", "train", "--output_dir", "d", "--resume", "/ck/s1-5"};
  EXPECT_EQ(RestartCommand(split, none), split);
  const Args fresh = {"reid", "train", "--output_dir=d"};
  EXPECT_EQ(RestartCommand(fresh, none), WithResumeAuto(fresh));
  EXPECT_EQ(RestartCommand({"reid", "train", "--output_dir=d", "--resume=auto"}, none),
            (Args{"reid", "train", "--output_dir=d", "--resume=auto"}));
}

LaunchPlan TwoRankPlan() {
  LaunchPlan p;
  p.launcher = "/usr/bin/mpirun";
  p.procs_per_node = 2;
  p.command = {"/bin/reid", "train", "--output_dir=d"};
  p.env = {{"NCCL_DEBUG", "WARN"}};
  p.exported_env = {"NCCL_SOCKET_IFNAME", "PATH"};
  return p;
}

TEST(PlanTest, MpirunCommandPerAttempt) {
  LaunchPlan p = TwoRankPlan();
  EXPECT_EQ(AttemptArgv(p, 0),
            (Args{"/usr/bin/mpirun", "-np", "2", "--map-by", "ppr:2:node", "--oversubscribe",
                  "--bind-to", "none", "-x", "NCCL_DEBUG", "-x", "NCCL_SOCKET_IFNAME", "-x", "PATH",
                  "/bin/reid", "train", "--output_dir=d"}));
  const Args second = AttemptArgv(p, 1);
  EXPECT_EQ(second.back(), "--resume=auto");
  EXPECT_EQ(AttemptArgv(p, 2), second);
}

TEST(PlanTest, HostfileReadIsBounded) {
  const std::string big = ::testing::TempDir() + "/big_hostfile";
  {
    std::ofstream out(big);
    out << "node1\n" << std::string(kMaxHostfileBytes, '#');
  }
  const StatusOr<int> nodes = ReadHostfileNodes(big);
  ASSERT_FALSE(nodes.ok());
  EXPECT_NE(nodes.status().message().find("larger than 1048576 bytes"), std::string::npos)
      << nodes.status().message();
  EXPECT_FALSE(ReadHostfileNodes("/dev/zero").ok());  // endless: refused, not read to the end
  EXPECT_EQ(ReadHostfileNodes("/nonexistent/hosts").status().message(),
            "--hostfile=/nonexistent/hosts: cannot be read");
}

TEST(PlanTest, MpirunWithHostfile) {
  LaunchPlan p = TwoRankPlan();
  p.nodes = 3;
  p.hostfile = "hosts";
  const Args argv = AttemptArgv(p, 0);
  EXPECT_EQ(Args(argv.begin(), argv.begin() + 11),
            (Args{"/usr/bin/mpirun", "-np", "6", "--map-by", "ppr:2:node", "--oversubscribe",
                  "--bind-to", "none", "--hostfile", "hosts", "-x"}));
}

TEST(PlanTest, SrunCommand) {
  LaunchPlan p = TwoRankPlan();
  p.backend = Backend::kSrun;
  p.launcher = "/usr/bin/srun";
  p.nodes = 2;
  EXPECT_EQ(AttemptArgv(p, 1),
            (Args{"/usr/bin/srun", "--mpi=pmix", "--kill-on-bad-exit=1", "--nodes=2", "--ntasks=4",
                  "--ntasks-per-node=2", "/bin/reid", "train", "--output_dir=d", "--resume=auto"}));
}

TEST(PlanTest, FindExecutableAndShellJoin) {
  EXPECT_EQ(FindExecutable("sh", "/nonexistent:/bin"), "/bin/sh");
  EXPECT_EQ(FindExecutable("/bin/sh", ""), "/bin/sh");
  EXPECT_EQ(FindExecutable("no-such-binary-reid", "/bin:/usr/bin"), "");
  EXPECT_EQ(FindExecutable("/etc/passwd", nullptr), "");  // not executable
  EXPECT_EQ(FindExecutable("/bin", nullptr), "");         // a directory
  EXPECT_EQ(ShellJoin({"reid", "train", "--set=stage1 { max_epochs: 2 }", "it's"}),
            "reid train '--set=stage1 { max_epochs: 2 }' 'it'\\''s'");
}

}  // namespace
}  // namespace reid::launcher
