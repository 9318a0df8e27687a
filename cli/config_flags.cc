// --config / --set handling shared by the subcommands.
#include "cli/config_flags.h"

#include "proto/config.h"

DEFINE_string(config, "", "Text-format ReidConfig file (see configs/); empty = schema defaults");

namespace reid::trainer {

StatusOr<proto::ReidConfig> LoadConfigFromFlags(const std::vector<std::string>& set_overrides) {
  proto::ReidConfig cfg;
  const config::Problems problems = config::Load(FLAGS_config, set_overrides, &cfg);
  if (problems.empty()) return cfg;
  std::string text = "invalid config" + (FLAGS_config.empty() ? "" : " " + FLAGS_config) + " (" +
                     std::to_string(problems.size()) + " problem" +
                     (problems.size() == 1 ? "" : "s") + "):";
  for (const std::string& p : problems) text += "\n  " + p;
  return Status::InvalidArgument(text);
}

}  // namespace reid::trainer
