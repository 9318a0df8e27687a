// Generic protobuf reflection helpers (no knowledge of the config's fields).
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <vector>

namespace reid::proto {

// Dotted paths of the leaf fields whose values differ between `a` and `b` (same message type),
// in field order. Singular messages are walked; repeated fields and maps are compared whole and
// named by their own path; an unset field compares as its default value.
std::vector<std::string> DiffFields(const google::protobuf::Message& a,
                                    const google::protobuf::Message& b);

}  // namespace reid::proto
