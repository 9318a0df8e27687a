// Fuzzes the meta CSV reader of `reid eval` (header `path,pid,camid`, one row per feature row):
// any input must parse or come back as a Status with a message, never crash or run away.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/features_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  reid::StatusOr<std::vector<reid::formats::MetaRow>> rows =
      reid::formats::ParseMetaCsv(text, "fuzz.csv");
  if (!rows.ok() && rows.status().message().empty()) __builtin_trap();  // errors say what
  return 0;
}
