// Fuzzes the dataset list parsers: CSV (train/query/gallery.csv) and MSMT17 list files. The input
// is split at NUL bytes into the files of one dataset folder, written to a temporary directory.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/dataset.h"

namespace fs = std::filesystem;

namespace {

const fs::path& Dir() {
  static const fs::path dir = [] {
    char tmpl[] = "/tmp/fuzz_dataset_XXXXXX";
    return fs::path(mkdtemp(tmpl));
  }();
  return dir;
}

void Write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string part[4];
  size_t at = 0;
  for (int k = 0; k < 4; ++k) {
    const size_t nul = input.find('\0', at);
    part[k] = input.substr(at, nul == std::string::npos ? std::string::npos : nul - at);
    if (nul == std::string::npos) break;
    at = nul + 1;
  }
  const fs::path csv = Dir() / "csv", msmt = Dir() / "MSMT17";
  fs::create_directories(csv);
  fs::create_directories(msmt / "train");
  fs::create_directories(msmt / "test");
  Write(csv / "train.csv", part[0]);
  Write(csv / "query.csv", part[1]);
  Write(csv / "gallery.csv", part[2]);
  const reid::StatusOr<reid::data::Dataset> d =
      reid::data::LoadDataset(reid::data::DatasetKind::kCsv, csv.string());
  if (d.ok()) {
    for (const auto& s : d->train)
      if (s.path.find("/../") != std::string::npos || s.pid < 0) __builtin_trap();
  }
  if (d.status().message().size() > 4096) __builtin_trap();  // echoed lines are capped
  Write(msmt / "list_train.txt", part[0]);
  Write(msmt / "list_val.txt", part[3]);
  Write(msmt / "list_query.txt", part[1]);
  Write(msmt / "list_gallery.txt", part[2]);
  reid::data::LoadDataset(reid::data::DatasetKind::kMsmt17, Dir().string());
  return 0;
}
