// `reid print-config`: prints the effective config (defaults, --config, --set) in text format.
#include <iostream>

#include "proto/config.h"
#include "cli/commands.h"
#include "cli/config_flags.h"

namespace reid::trainer {

int RunPrintConfig(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  proto::ReidConfig cfg;
  if (!LoadConfigFromFlags(set_overrides, &cfg)) return kExitUsage;
  std::cout << config::ToText(cfg);
  return kExitOk;
}

}  // namespace reid::trainer
