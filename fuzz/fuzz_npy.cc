// Fuzzes the .npy reader: the input is written to a temporary file and read back.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "formats/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/fuzz_npy_" + std::to_string(getpid()) + ".npy";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  const reid::StatusOr<torch::Tensor> t = reid::formats::ReadNpy(path);
  if (t.ok()) {
    // A tensor read from the file holds no more bytes than the file.
    if (static_cast<size_t>(t->numel()) * t->element_size() > size * 2) __builtin_trap();
  }
  return 0;
}
