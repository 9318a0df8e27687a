// reid-launch's plan: rank count, backend and per-attempt command lines (see plan.h).
#include "launcher/plan.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "base/file_util.h"

namespace reid::launcher {
namespace {

bool StartsWith(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

bool IsGpuDevice(const std::string& name) {  // nvidia0, nvidia1, ... (not nvidiactl, nvidia-uvm)
  if (!StartsWith(name, "nvidia") || name.size() == 6) return false;
  for (size_t i = 6; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

std::vector<std::string> ListDirectory(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) names.emplace_back(e->d_name);
    closedir(d);
  }
  return names;
}

std::vector<std::string> EnvironmentNames() {
  std::vector<std::string> names;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    names.push_back(entry.substr(0, entry.find('=')));
  }
  return names;
}

int EnvInt(const EnvLookup& env, const char* name, int fallback) {
  const char* v = env(name);
  if (v == nullptr || *v == 0) return fallback;
  const int n = std::atoi(v);
  return n > 0 ? n : fallback;
}

// A word of a hostfile as echoed in an error: at most 40 bytes, non-printable ones as \xNN.
std::string Shown(const std::string& word) {
  std::string out;
  for (size_t i = 0; i < word.size() && i < 40; ++i) {
    const unsigned char c = static_cast<unsigned char>(word[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "\\x%02x", c);
      out += hex;
    }
  }
  return word.size() > 40 ? out + "..." : out;
}

bool IsRfc1123Name(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const size_t end = dot == std::string::npos ? name.size() : dot;
    const size_t len = end - start;
    if (len < 1 || len > 63 || name[start] == '-' || name[end - 1] == '-') return false;
    for (size_t i = start; i < end; ++i) {
      const char c = name[i];
      const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-';
      if (!ok) return false;
    }
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

// A host of the grammar in plan.h: an IPv6 address (it has a ':'), an IPv4 address (only digits
// and dots), else an RFC 1123 name.
bool IsHost(const std::string& host) {
  unsigned char addr[sizeof(struct in6_addr)];
  if (host.find(':') != std::string::npos) return inet_pton(AF_INET6, host.c_str(), addr) == 1;
  if (host.find_first_not_of("0123456789.") == std::string::npos) {
    return inet_pton(AF_INET, host.c_str(), addr) == 1;
  }
  return IsRfc1123Name(host);
}

// "slots=N" or "max_slots=N" with N in 1..1000000 (digits only).
bool IsSlotsField(const std::string& word) {
  const size_t eq = word.find('=');
  if (eq == std::string::npos) return false;
  const std::string key = word.substr(0, eq), n = word.substr(eq + 1);
  if (key != "slots" && key != "max_slots") return false;
  if (n.empty() || n.size() > 7 || n.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const long v = std::strtol(n.c_str(), nullptr, 10);
  return v >= 1 && v <= 1000000;
}

}  // namespace

StatusOr<int> ReadHostfileNodes(const std::string& path) {
  // Bounded, and only a regular file: /dev/zero, a FIFO or a wrong file must not hang us.
  StatusOr<std::string> text = base::ReadRegularFile(path, kMaxHostfileBytes, "a hostfile");
  if (!text.ok()) return text.status().Annotate("--hostfile");
  return CountHostfileNodes(*text, path);
}

int CountVisibleGpus(const EnvLookup& env, const std::vector<std::string>& dev_entries) {
  if (const char* visible = env("CUDA_VISIBLE_DEVICES")) {
    const std::string list = visible;
    if (list == "NoDevFiles") return 0;
    int count = 0;
    std::stringstream in(list);
    std::string item;
    while (std::getline(in, item, ',')) {
      if (item.empty() || item[0] == '-') break;  // CUDA stops at the first invalid entry
      ++count;
    }
    return count;
  }
  int count = 0;
  for (const std::string& name : dev_entries) count += IsGpuDevice(name) ? 1 : 0;
  return count;
}

int UsableCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online > 0 ? static_cast<int>(online) : 1;
}

StatusOr<int> ProcsPerNode(const LaunchArgs& args, int visible_gpus, int usable_cores) {
  if (args.nproc_per_node == 0) return visible_gpus > 0 ? visible_gpus : 1;
  if (args.oversubscribe) return args.nproc_per_node;
  if (visible_gpus > 0 && args.nproc_per_node > visible_gpus) {
    return Status::InvalidArgument("--nproc_per_node=" + std::to_string(args.nproc_per_node) +
                                   ": only " + std::to_string(visible_gpus) +
                                   " GPU(s) visible here (CUDA_VISIBLE_DEVICES or " +
                                   "/dev/nvidiaN); one rank per GPU, or --oversubscribe");
  }
  if (visible_gpus == 0 && args.nproc_per_node > usable_cores) {
    return Status::InvalidArgument("--nproc_per_node=" + std::to_string(args.nproc_per_node) +
                                   ": no GPU visible and only " + std::to_string(usable_cores) +
                                   " core(s) usable here; at most one CPU rank per core, or " +
                                   "--oversubscribe");
  }
  return args.nproc_per_node;
}

StatusOr<int> CountHostfileNodes(const std::string& text, const std::string& path) {
  std::set<std::string> hosts;
  std::stringstream in(text);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    line = line.substr(0, line.find('#'));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::vector<std::string> words;
    size_t pos = 0;
    while (pos < line.size()) {  // words are separated by spaces and tabs only
      const size_t start = line.find_first_not_of(" \t", pos);
      if (start == std::string::npos) break;
      const size_t end = std::min(line.find_first_of(" \t", start), line.size());
      words.push_back(line.substr(start, end - start));
      pos = end;
    }
    if (words.empty()) continue;
    const std::string where = "--hostfile=" + path + ":" + std::to_string(number) + ": ";
    if (!IsHost(words[0])) {
      return Status::InvalidArgument(where + "'" + Shown(words[0]) +
                                     "' is not a host name (RFC 1123), IPv4 or IPv6 address");
    }
    for (size_t i = 1; i < words.size(); ++i) {
      if (!IsSlotsField(words[i])) {
        return Status::InvalidArgument(where + "'" + Shown(words[i]) +
                                       "' after the host: expected slots=N or max_slots=N "
                                       "(N in 1..1000000) or a # comment");
      }
    }
    hosts.insert(words[0]);
  }
  if (hosts.empty()) return Status::InvalidArgument("--hostfile=" + path + ": names no node");
  return static_cast<int>(hosts.size());
}

Backend ChooseBackend(const LaunchArgs& args, const EnvLookup& env) {
  if (args.backend != Backend::kAuto) return args.backend;
  const char* job = env("SLURM_JOB_ID");
  return job != nullptr && *job != 0 && args.hostfile.empty() ? Backend::kSrun : Backend::kMpirun;
}

std::vector<std::string> ExportedEnvNames(const std::vector<std::string>& env_names) {
  static const char* const kPrefixes[] = {"NCCL_", "UCX_", "CUDA_", "OMP_", "REID_"};
  static const std::set<std::string> kNames = {"PATH", "LD_LIBRARY_PATH", "GLIBC_TUNABLES"};
  std::set<std::string> picked;
  for (const std::string& name : env_names) {
    bool keep = kNames.count(name) > 0;
    for (const char* prefix : kPrefixes) keep = keep || StartsWith(name, prefix);
    if (keep) picked.insert(name);
  }
  return {picked.begin(), picked.end()};
}

std::vector<std::string> WithResumeAuto(std::vector<std::string> command) {
  for (size_t i = 1; i < command.size(); ++i) {
    const std::string& a = command[i];
    const bool flag = a == "--resume=auto" || a == "-resume=auto";
    const bool split =
        (a == "--resume" || a == "-resume") && i + 1 < command.size() && command[i + 1] == "auto";
    if (flag || split) return command;
  }
  command.push_back("--resume=auto");
  return command;
}

namespace {

// The value of flag `name` ("--name=V", "-name=V", or "--name V"); empty when absent. The last
// occurrence wins, as in gflags.
std::string FlagValue(const std::vector<std::string>& command, const std::string& name) {
  std::string value;
  for (size_t i = 1; i < command.size(); ++i) {
    for (const std::string& dash : {std::string("--"), std::string("-")}) {
      const std::string& a = command[i];
      if (StartsWith(a, dash + name + "=")) value = a.substr(dash.size() + name.size() + 1);
      if (a == dash + name && i + 1 < command.size()) value = command[i + 1];
    }
  }
  return value;
}

}  // namespace

std::vector<std::string> RestartCommand(const std::vector<std::string>& command,
                                        const std::function<bool(const std::string&)>& file_exists) {
  const std::string resume = FlagValue(command, "resume");
  const std::string output_dir = FlagValue(command, "output_dir");
  if (!resume.empty() && resume != "auto" && !output_dir.empty() &&
      !file_exists(output_dir + "/checkpoints/index.txtpb")) {
    return command;
  }
  return WithResumeAuto(command);
}

std::vector<std::pair<std::string, std::string>> DefaultJobEnv(const EnvLookup& env) {
  std::vector<std::pair<std::string, std::string>> set;
  if (env("NCCL_DEBUG") == nullptr) set.emplace_back("NCCL_DEBUG", "WARN");
  return set;
}

std::vector<std::string> MpirunArgv(const LaunchPlan& plan,
                                    const std::vector<std::string>& command) {
  const int n = plan.procs_per_node;
  std::vector<std::string> argv = {plan.launcher,
                                   "-np",
                                   std::to_string(n * plan.nodes),
                                   "--map-by",
                                   "ppr:" + std::to_string(n) + ":node",
                                   "--oversubscribe",
                                   "--bind-to",
                                   "none"};
  if (!plan.hostfile.empty()) {
    argv.push_back("--hostfile");
    argv.push_back(plan.hostfile);
  }
  std::set<std::string> exported(plan.exported_env.begin(), plan.exported_env.end());
  for (const auto& [name, value] : plan.env) exported.insert(name);
  for (const std::string& name : exported) {
    argv.push_back("-x");
    argv.push_back(name);
  }
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

std::vector<std::string> SrunArgv(const LaunchPlan& plan, const std::vector<std::string>& command) {
  const int n = plan.procs_per_node;
  std::vector<std::string> argv = {plan.launcher,
                                   "--mpi=pmix",
                                   "--kill-on-bad-exit=1",
                                   "--nodes=" + std::to_string(plan.nodes),
                                   "--ntasks=" + std::to_string(n * plan.nodes),
                                   "--ntasks-per-node=" + std::to_string(n)};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

std::vector<std::string> AttemptArgv(const LaunchPlan& plan, int attempt) {
  auto exists = [](const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
  };
  const std::vector<std::string> command =
      attempt == 0 ? plan.command : RestartCommand(plan.command, exists);
  return plan.backend == Backend::kSrun ? SrunArgv(plan, command) : MpirunArgv(plan, command);
}

std::string FindExecutable(const std::string& name, const char* path_env) {
  auto executable = [](const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
  };
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return executable(name) ? name : "";
  std::stringstream dirs(path_env != nullptr ? path_env : "");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (executable(candidate)) return candidate;
  }
  return "";
}

std::string ShellJoin(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && a.find_first_not_of(
                                         "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                         "0123456789_-+=./:,@%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

StatusOr<LaunchPlan> MakeLaunchPlan(const LaunchArgs& args) {
  const EnvLookup env = [](const char* name) { return std::getenv(name); };
  LaunchPlan plan;
  plan.backend = ChooseBackend(args, env);
  const bool srun = plan.backend == Backend::kSrun;
  const std::string& tool = srun ? args.srun : args.mpirun;
  plan.launcher = FindExecutable(tool, std::getenv("PATH"));
  if (plan.launcher.empty()) {
    return Status::InvalidArgument(
        std::string(srun ? "--srun=" : "--mpirun=") + tool +
        (tool.find('/') == std::string::npos ? ": not found on PATH; " : ": no such executable; ") +
        (srun ? "install SLURM's client (Debian package slurm-client)"
              : "install Open MPI (Debian package openmpi-bin)") +
        " or name the binary with " + (srun ? "--srun=PATH" : "--mpirun=PATH"));
  }
  StatusOr<int> n =
      ProcsPerNode(args, CountVisibleGpus(env, ListDirectory("/dev")), UsableCores());
  if (!n.ok()) return n.status();
  plan.procs_per_node = *n;
  if (srun) {
    plan.nodes = EnvInt(env, "SLURM_NNODES", EnvInt(env, "SLURM_JOB_NUM_NODES", 1));
  } else if (!args.hostfile.empty()) {
    StatusOr<int> nodes = ReadHostfileNodes(args.hostfile);
    if (!nodes.ok()) return nodes.status();
    plan.nodes = *nodes;
    plan.hostfile = args.hostfile;
  }
  plan.command = args.command;
  plan.command[0] = FindExecutable(args.command[0], std::getenv("PATH"));
  if (plan.command[0].empty()) {
    return Status::NotFound(
        "command '" + args.command[0] + "' not found" +
        (args.command[0].find('/') == std::string::npos ? " on PATH" : " or not executable"));
  }
  plan.env = DefaultJobEnv(env);
  plan.exported_env = ExportedEnvNames(EnvironmentNames());
  plan.max_restarts = args.max_restarts;
  plan.restart_delay_s = args.restart_delay_s;
  return plan;
}

}  // namespace reid::launcher
