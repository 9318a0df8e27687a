// Fuzzes the checkpoint reader (trainer/checkpoint.h): the input is split at the first NUL into
// meta.pb and the content of a file "model.pt" of a checkpoint directory; VerifyCheckpoint checks
// meta against the files (names, sizes, CRC-32), ReadCheckpointFile reads what it lists and
// DeserializeTensors parses model.pt (a torch.save zip, our bounded reader).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/checkpoint.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dir = [] {
    char tmpl[] = "/tmp/fuzz_ckpt_XXXXXX";
    return fs::path(mkdtemp(tmpl)) / "s1-e0001-i000000";
  }();
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  fs::create_directories(dir);
  std::ofstream(dir / "meta.pb", std::ios::binary) << input.substr(0, nul);
  std::ofstream(dir / "model.pt", std::ios::binary)
      << (nul == std::string::npos ? "" : input.substr(nul + 1));
  reid::proto::CheckpointMeta meta;
  if (!reid::trainer::VerifyCheckpoint(dir.string(), &meta).ok()) return 0;
  for (const auto& f : meta.files()) {
    const auto bytes = reid::trainer::ReadCheckpointFile(dir.string(), meta, f.path());
    if (bytes.ok() && f.path() == "model.pt") reid::trainer::DeserializeTensors(*bytes, "model.pt");
  }
  return 0;
}
