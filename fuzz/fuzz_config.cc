// Fuzzes the config loader: text-format parsing with our error collector, --set merging and
// validation. The input is the config text; after a NUL byte, the rest is one --set override.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "proto/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  std::vector<std::string> overrides;
  if (nul != std::string::npos) overrides.push_back(input.substr(nul + 1));
  reid::proto::ReidConfig cfg;
  const reid::config::Problems problems =
      reid::config::LoadFromText(input.substr(0, nul), "fuzz.textproto", overrides, &cfg);
  if (problems.size() > 51) __builtin_trap();  // the listed problems are capped
  for (const std::string& p : problems)
    if (p.size() > 4096) __builtin_trap();  // echoed source text is capped
  if (problems.empty()) reid::config::ToText(cfg);
  return 0;
}
