// Unit tests of reid-launch's plan: GPU counting, rank count, backend choice and the mpirun /
// srun command lines of each attempt.
#include "launcher/plan.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

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
  EXPECT_EQ(*ProcsPerNode(a, 8, 64), 8);  // default: one per GPU
  EXPECT_EQ(*ProcsPerNode(a, 0, 64), 1);  // none: one CPU rank
  a.nproc_per_node = 4;
  EXPECT_EQ(*ProcsPerNode(a, 8, 2), 4);  // with GPUs the cores do not bound it
  EXPECT_EQ(*ProcsPerNode(a, 0, 4), 4);  // CPU ranks (MPI CPU backend), one per core
  a.nproc_per_node = 9;
  StatusOr<int> too_many = ProcsPerNode(a, 8, 64);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().exit_code(), 2);
  EXPECT_NE(too_many.status().message().find("--nproc_per_node=9: only 8 GPU(s) visible"),
            std::string::npos);
  a.nproc_per_node = 1000000;  // a typo must not fork a million trainers
  EXPECT_EQ(ProcsPerNode(a, 0, 2).status().message(),
            "--nproc_per_node=1000000: no GPU visible and only 2 core(s) usable here; at most one "
            "CPU rank per core, or --oversubscribe");
  a.oversubscribe = true;  // the explicit override
  EXPECT_EQ(*ProcsPerNode(a, 0, 2), 1000000);
  a.nproc_per_node = 9;
  EXPECT_EQ(*ProcsPerNode(a, 8, 64), 9);
  EXPECT_GE(UsableCores(), 1);
}

TEST(PlanTest, HostfileNodes) {
  EXPECT_EQ(*CountHostfileNodes("# cluster\nnode1 slots=8\nnode2 slots=8\n\nnode1\n", "h"), 2);
  EXPECT_EQ(*CountHostfileNodes("localhost", "h"), 1);
  EXPECT_EQ(CountHostfileNodes("# nothing\n\n", "hosts.txt").status().message(),
            "--hostfile=hosts.txt: names no node");
  // The grammar: RFC 1123 names, IPv4 and IPv6 addresses, slots / max_slots, comments, CR LF.
  EXPECT_EQ(*CountHostfileNodes("gpu-01.cluster.example.org slots=4 max_slots=8 # rack 1\r\n"
                                "10.0.0.2\tslots=4\n"
                                "fe80::1\n"
                                "  2001:db8::7   # v6\n"
                                "N0DE-9\n",
                                "h"),
            5);
  auto error = [](const std::string& text) {
    const StatusOr<int> n = CountHostfileNodes(text, "h");
    EXPECT_FALSE(n.ok()) << text;
    EXPECT_EQ(n.status().exit_code(), 2);
    return n.status().message();
  };
  EXPECT_EQ(error("node1\n-node2\n"),
            "--hostfile=h:2: '-node2' is not a host name (RFC 1123), IPv4 or IPv6 address");
  EXPECT_EQ(error("node_1\n"),
            "--hostfile=h:1: 'node_1' is not a host name (RFC 1123), IPv4 or IPv6 address");
  EXPECT_NE(error("a..b\n").find("'a..b' is not a host name"), std::string::npos);
  EXPECT_NE(error(std::string(64, 'a') + "\n").find("is not a host name"), std::string::npos);
  EXPECT_EQ(*CountHostfileNodes(std::string(63, 'a'), "h"), 1);
  EXPECT_NE(error("999.1.2.3\n").find("'999.1.2.3' is not a host name"), std::string::npos);
  EXPECT_NE(error("fe80::g1\n").find("'fe80::g1'"), std::string::npos);
  EXPECT_EQ(error("node1 slots=0\n"),
            "--hostfile=h:1: 'slots=0' after the host: expected slots=N or max_slots=N (N in "
            "1..1000000) or a # comment");
  EXPECT_NE(error("node1 slots=8 extra\n").find("'extra' after the host"), std::string::npos);
  EXPECT_NE(error("node1 cpus=8\n").find("'cpus=8'"), std::string::npos);
  // Binary bytes (a wrong file) are refused at the first line, shown escaped and cut.
  EXPECT_EQ(error(std::string("\x89PNG\x01\x02\n", 7)),
            "--hostfile=h:1: '\\x89PNG\\x01\\x02' is not a host name (RFC 1123), IPv4 or IPv6 "
            "address");
  EXPECT_NE(error(std::string(200, '\xff')).find("...'"), std::string::npos);
  EXPECT_NE(error(std::string("node\0one\n", 9)).find("'node\\x00one'"), std::string::npos);
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

TEST(PlanTest, HostfileReadIsBoundedToRegularFiles) {
  const std::string big = ::testing::TempDir() + "/big_hostfile";
  {
    std::ofstream out(big);
    out << "node1\n" << std::string(kMaxHostfileBytes, '#');
  }
  const StatusOr<int> nodes = ReadHostfileNodes(big);
  ASSERT_FALSE(nodes.ok());
  EXPECT_EQ(nodes.status().message(),
            "--hostfile: " + big + ": 1.0 MB is more than the 1 MiB limit for a hostfile");
  // Endless or blocking files are refused before a byte is read.
  EXPECT_EQ(ReadHostfileNodes("/dev/zero").status().message(),
            "--hostfile: /dev/zero: not a regular file (a character device)");
  const std::string fifo = ::testing::TempDir() + "/fifo_hostfile";
  unlink(fifo.c_str());
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(ReadHostfileNodes(fifo).status().message(),
            "--hostfile: " + fifo + ": not a regular file (a FIFO)");
  unlink(fifo.c_str());
  EXPECT_EQ(ReadHostfileNodes("/nonexistent/hosts").status().message(),
            "--hostfile: /nonexistent/hosts: cannot open (No such file or directory)");
  EXPECT_EQ(ReadHostfileNodes("/nonexistent/hosts").status().exit_code(), 2);
  const std::string good = ::testing::TempDir() + "/good_hostfile";
  std::ofstream(good) << "node1 slots=2\nnode2 slots=2\n";
  EXPECT_EQ(*ReadHostfileNodes(good), 2);
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
