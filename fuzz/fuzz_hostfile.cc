// Fuzzes reid-launch's one user-file reader, the Open MPI hostfile: the text parser on the input
// as it is, and the bounded file read on the same bytes written to a temporary file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "launcher/plan.h"

namespace {

char g_path[] = "/tmp/fuzz_hostfile_XXXXXX";

const char* Path() {  // one temporary file per process, removed at exit
  static const bool made = [] {
    const int fd = mkstemp(g_path);
    if (fd < 0) std::abort();
    close(fd);
    std::atexit([] { unlink(g_path); });
    return true;
  }();
  (void)made;
  return g_path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const reid::StatusOr<int> parsed = reid::launcher::CountHostfileNodes(text, "fuzz");
  if (parsed.ok() && (*parsed < 1 || static_cast<size_t>(*parsed) > size)) std::abort();
  std::ofstream(Path(), std::ios::binary | std::ios::trunc) << text;
  const reid::StatusOr<int> read = reid::launcher::ReadHostfileNodes(Path());
  // The file holds the same bytes, so the bounded read must agree with the parser.
  if (read.ok() != parsed.ok() || (read.ok() && *read != *parsed)) std::abort();
  return 0;
}
