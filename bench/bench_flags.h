// Command-line parsing shared by the benchmarks (gflags, flags DEFINEd in each bench_*.cc).
// gflags by itself exits 1 on an unknown flag or a bad value (--threads=abc, --json=2); here each
// argument is tried first on a saved copy of the flags, so that a bad one is a user error: one
// line naming the flag and value, exit 2. --help prints the usage and this benchmark's own flags
// (not glog's or the libraries'); --helpfull prints every flag.
#pragma once

#include <gflags/gflags.h>

#include <cstdlib>
#include <iostream>
#include <string>

namespace reid::bench {

// Sets the usage message, checks and parses argv (removing the flags); exits 0 after --help and
// 2 (with a message on stderr) on an unknown flag, a bad value or a positional argument.
inline void ParseBenchFlags(const char* usage, int* argc, char*** argv) {
  gflags::SetUsageMessage(usage);
  const std::string program = (*argc > 0 ? (*argv)[0] : "bench");
  auto fail = [&](const std::string& what) {
    std::cerr << "error: " << what << " (see " << program << " --help)\n";
    std::exit(2);
  };
  {
    gflags::FlagSaver saver;  // restores every flag on return
    for (int i = 1; i < *argc; ++i) {
      std::string a = (*argv)[i];
      if (a == "--") break;
      if (a.rfind("-", 0) != 0) fail("takes no positional argument, got '" + a.substr(0, 100) + "'");
      a.erase(0, a.find_first_not_of('-'));
      const size_t eq = a.find('=');
      const std::string name = a.substr(0, eq);
      if (name == "help" || name == "h") {
        gflags::ShowUsageWithFlagsRestrict(program.c_str(), "bench/bench_");
        std::exit(0);
      }
      if (name == "helpfull" || name == "helpshort" || name == "helpxml" || name == "version") {
        continue;  // gflags' own
      }
      gflags::CommandLineFlagInfo info;
      if (!gflags::GetCommandLineFlagInfo(name.c_str(), &info)) {
        if (name.rfind("no", 0) == 0 && eq == std::string::npos &&
            gflags::GetCommandLineFlagInfo(name.c_str() + 2, &info) && info.type == "bool") {
          continue;  // --nofoo
        }
        fail("unknown flag --" + name);
      }
      std::string value;
      if (eq != std::string::npos) {
        value = a.substr(eq + 1);
      } else if (info.type == "bool") {
        value = "true";
      } else if (i + 1 < *argc) {
        value = (*argv)[++i];
      } else {
        fail("--" + name + " needs a value (" + info.type + ")");
      }
      if (gflags::SetCommandLineOption(name.c_str(), value.c_str()).empty()) {
        fail("--" + name + "=" + value.substr(0, 40) + ": not a valid " + info.type);
      }
    }
  }
  gflags::ParseCommandLineFlags(argc, argv, /*remove_flags=*/true);
  if (*argc > 1) fail("takes no positional argument, got '" + std::string((*argv)[1]) + "'");
}

}  // namespace reid::bench
