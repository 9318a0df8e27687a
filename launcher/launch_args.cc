// Parsing of reid-launch's flags (see launch_args.h); no gflags, so the parser is a pure function.
#include "launcher/launch_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace reid::launcher {

const char kLaunchUsage[] =
    "usage: reid-launch [--nproc_per_node=N] [--oversubscribe] [--hostfile=F]\n"
    "                   [--max_restarts=R] [--restart_delay_s=S] [--mpirun=PATH] [--srun=PATH]\n"
    "                   [--launcher=auto|mpirun|srun] -- reid train --config=... "
    "--output_dir=...\n"
    "Starts N trainers per node (default: one per visible GPU, 1 without GPUs; at most the GPUs,\n"
    "or the usable cores without GPUs, unless --oversubscribe) through mpirun, or through srun\n"
    "inside a SLURM allocation; forwards SIGINT, SIGTERM and SIGUSR1; restarts the whole job\n"
    "with --resume=auto after a failure, up to R times, waiting S s and then twice as long after\n"
    "each further failure in a row (at most 300 s; a run of 10 min resets it); a job that exits\n"
    "2 (a user error) is not restarted; exits with the job's status.\n";

namespace {

Status BadValue(const std::string& flag, const std::string& value, const std::string& why) {
  return Status::InvalidArgument("--" + flag + "=" + value + ": " + why);
}

Status ParseInt(const std::string& flag, const std::string& value, int* out) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != 0 || errno != 0 || v < 0 || v > 1000000) {
    return BadValue(flag, value, "expected a whole number >= 0");
  }
  *out = static_cast<int>(v);
  return Status::Ok();
}

// Applies one flag; `value` is what followed '=' or the next argument.
Status ApplyFlag(const std::string& flag, const std::string& value, LaunchArgs* a) {
  if (flag == "nproc_per_node") {
    REID_RETURN_IF_ERROR(ParseInt(flag, value, &a->nproc_per_node));
    if (a->nproc_per_node == 0) return BadValue(flag, value, "must be at least 1");
  } else if (flag == "oversubscribe") {
    if (value != "true" && value != "false") return BadValue(flag, value, "expected true or false");
    a->oversubscribe = value == "true";
  } else if (flag == "max_restarts") {
    REID_RETURN_IF_ERROR(ParseInt(flag, value, &a->max_restarts));
  } else if (flag == "restart_delay_s") {
    char* end = nullptr;
    a->restart_delay_s = std::strtod(value.c_str(), &end);
    if (value.empty() || *end != 0 || !std::isfinite(a->restart_delay_s) ||
        a->restart_delay_s < 0 || a->restart_delay_s > 86400) {
      return BadValue(flag, value, "expected seconds in [0, 86400]");
    }
  } else if (flag == "hostfile") {
    if (value.empty()) return BadValue(flag, value, "empty path");
    a->hostfile = value;
  } else if (flag == "mpirun" || flag == "srun") {
    if (value.empty()) return BadValue(flag, value, "empty path");
    (flag == "mpirun" ? a->mpirun : a->srun) = value;
  } else if (flag == "launcher") {
    if (value == "auto") {
      a->backend = Backend::kAuto;
    } else if (value == "mpirun") {
      a->backend = Backend::kMpirun;
    } else if (value == "srun") {
      a->backend = Backend::kSrun;
    } else {
      return BadValue(flag, value, "expected auto, mpirun or srun");
    }
  } else {
    return Status::InvalidArgument("unknown flag --" + flag +
                                   " (reid-launch's own flags come "
                                   "before `--`, the trainer's after it)");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<LaunchArgs> ParseLaunchArgs(const std::vector<std::string>& args) {
  LaunchArgs a;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.rfind("--", 0) != 0) break;  // the command starts here
    std::string flag = arg.substr(2), value;
    if (flag == "help" || flag == "h") {
      a.help = true;
      continue;
    }
    const size_t eq = flag.find('=');
    if (eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    } else if (flag == "oversubscribe") {  // a switch: the bare flag means true
      value = "true";
    } else if (i + 1 < args.size() && args[i + 1] != "--") {
      value = args[++i];
    } else {
      return Status::InvalidArgument("--" + flag + ": needs a value");
    }
    REID_RETURN_IF_ERROR(ApplyFlag(flag, value, &a));
  }
  a.command.assign(args.begin() + i, args.end());
  if (a.command.empty() && !a.help) {
    return Status::InvalidArgument(
        "no command: give the trainer after `--`, e.g. "
        "reid-launch -- reid train --config=F --output_dir=D");
  }
  return a;
}

}  // namespace reid::launcher
