// Flags shared by every subcommand that reads a config: --config and --set.
#pragma once

#include <gflags/gflags.h>

#include <string>
#include <vector>

#include "proto/reid_config.pb.h"

DECLARE_string(config);

namespace reid::trainer {

// Loads --config with every --set value (`set_overrides`, in order) applied and validates it. On
// problems prints them all to stderr (one per line, after a header naming the config) and returns
// false: the caller exits with 2.
bool LoadConfigFromFlags(const std::vector<std::string>& set_overrides, proto::ReidConfig* cfg);

}  // namespace reid::trainer
