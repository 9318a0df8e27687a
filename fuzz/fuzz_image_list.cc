// Fuzzes the image list of `reid embed --images=LIST.txt`: the text parser on the input as it is,
// and ListImages on the same bytes written to a temporary list file (the bounded read), which
// must agree with it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "data/image_list.h"

namespace {

char g_dir[] = "/tmp/fuzz_image_list_XXXXXX";

const std::string& ListPath() {  // one temporary folder and list per process, removed at exit
  static const std::string path = [] {
    if (mkdtemp(g_dir) == nullptr) std::abort();
    std::atexit([] {
      unlink((std::string(g_dir) + "/list.txt").c_str());
      rmdir(g_dir);
    });
    return std::string(g_dir) + "/list.txt";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const reid::StatusOr<std::vector<std::string>> parsed =
      reid::data::ParseImageList(text, "base", "fuzz.txt");
  if (!parsed.ok() && parsed.status().message().empty()) __builtin_trap();
  if (parsed.ok()) {
    if (parsed->size() > size) __builtin_trap();  // at most one path per line
    for (const std::string& p : *parsed) {
      // Each path is one line: no line end, no NUL, within the line bound (+ "base/").
      if (p.empty() || p.size() > reid::data::kMaxImageListLine + 5 ||
          p.find_first_of(std::string("\n\0", 2)) != std::string::npos)
        __builtin_trap();
    }
  }
  std::ofstream(ListPath(), std::ios::binary | std::ios::trunc) << text;
  const reid::StatusOr<std::vector<std::string>> read = reid::data::ListImages(ListPath());
  // Same bytes, so the same paths (relative to the list's folder); an empty list is an error.
  const bool parsed_some = parsed.ok() && !parsed->empty();
  if (read.ok() != parsed_some) __builtin_trap();
  if (read.ok() && read->size() != parsed->size()) __builtin_trap();
  return 0;
}
