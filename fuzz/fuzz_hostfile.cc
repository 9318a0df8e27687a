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

const std::string& Path() {
  static const std::string path = [] {
    char tmpl[] = "/tmp/fuzz_hostfile_XXXXXX";
    const int fd = mkstemp(tmpl);
    if (fd < 0) std::abort();
    close(fd);
    return std::string(tmpl);
  }();
  return path;
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
