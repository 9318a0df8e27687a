// `reid print-config`: prints the effective config (defaults, --config, --set) in text format.
#include <iostream>

#include "proto/config.h"
#include "cli/commands.h"
#include "cli/config_flags.h"

namespace reid::trainer {

int RunPrintConfig(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  const StatusOr<proto::ReidConfig> cfg = LoadConfigFromFlags(set_overrides);
  if (!cfg.ok()) return Fail("print-config", cfg.status());
  std::cout << config::ToText(*cfg);
  return kExitOk;
}

}  // namespace reid::trainer
