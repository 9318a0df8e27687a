// Loading and validation of the one config schema (reid_config.proto): schema defaults ->
// --config=FILE -> --set='TEXT' overrides (repeated fields replaced) -> validation.
#pragma once

#include <string>
#include <vector>

#include "proto/reid_config.pb.h"

namespace reid::config {

// Every problem found while loading, as printable lines ("FIELD = VALUE: why" or
// "FILE:LINE:COL: parser message (in: source line)"). Empty means the config is usable. A report
// rather than a Status (base/status.h) because user errors in a config are collected, all of
// them, and printed together; the `reid` command's LoadConfigFromFlags turns them into one
// InvalidArgument status (exit 2).
using Problems = std::vector<std::string>;

// Sets every unset singular field of `msg` (recursively) to its schema default, so that printing
// shows the effective value of every field.
void MaterializeDefaults(google::protobuf::Message* msg);

// Merges `src` into `dst` like MergeFrom, except that a repeated field present in `src` replaces
// the list in `dst` instead of appending to it.
void MergeReplacingRepeated(const google::protobuf::Message& src, google::protobuf::Message* dst);

// Fills empty repeated fields that have documented defaults (pixel mean/std, stage-2 steps).
void FillListDefaults(proto::ReidConfig* cfg);

// Checks value ranges and cross-field rules; returns every problem found.
Problems Validate(const proto::ReidConfig& cfg);

// The whole load: defaults, then `config_path` (may be empty), then each override in order, then
// list defaults, then validation. `cfg` holds the merged result even when problems are returned.
Problems Load(const std::string& config_path, const std::vector<std::string>& overrides,
              proto::ReidConfig* cfg);

// Loads from text already read (e.g. broadcast from rank 0); `source` names it in messages.
Problems LoadFromText(const std::string& config_text, const std::string& source,
                      const std::vector<std::string>& overrides, proto::ReidConfig* cfg);

// Text format of `cfg`, as written to the run directory and printed by `reid print-config`.
std::string ToText(const proto::ReidConfig& cfg);

// Whether a change of the ReidConfig field at the dotted `path` (e.g. "model.embed_dim" or
// "stage2.base_lr") alters tensor shapes or the data a checkpoint was trained on, so that a
// checkpoint cannot resume under it. The schema declares it with the field option
// (reid.proto.changes_shapes): the setting on the innermost field of the path that has one
// decides (a message field's covers the fields inside it); false when none does, or when `path`
// names no field of the schema.
bool ChangesShapesOrData(const std::string& path);

}  // namespace reid::config
