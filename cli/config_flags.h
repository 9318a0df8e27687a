// Flags shared by every subcommand that reads a config: --config and --set.
#pragma once

#include <gflags/gflags.h>

#include <string>
#include <vector>

#include "base/status.h"
#include "proto/reid_config.pb.h"

DECLARE_string(config);

namespace reid::trainer {

// Loads --config with every --set value (`set_overrides`, in order) applied and validates it.
// InvalidArgument listing every problem (a header naming the config, then one problem per line)
// when it does not load or validate.
StatusOr<proto::ReidConfig> LoadConfigFromFlags(const std::vector<std::string>& set_overrides);

}  // namespace reid::trainer
