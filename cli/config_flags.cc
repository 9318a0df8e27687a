// --config / --set handling shared by the subcommands.
#include "cli/config_flags.h"

#include <iostream>

#include "proto/config.h"
#include "cli/commands.h"

DEFINE_string(config, "", "Text-format ReidConfig file (see configs/); empty = schema defaults");

namespace reid::trainer {

bool LoadConfigFromFlags(const std::vector<std::string>& set_overrides, proto::ReidConfig* cfg) {
  const config::Problems problems = config::Load(FLAGS_config, set_overrides, cfg);
  if (problems.empty()) return true;
  std::cerr << "error: invalid config" << (FLAGS_config.empty() ? "" : " " + FLAGS_config) << " ("
            << problems.size() << " problem" << (problems.size() == 1 ? "" : "s") << "):\n";
  for (const std::string& p : problems) std::cerr << "  " << p << "\n";
  return false;
}

}  // namespace reid::trainer
