// Meta CSV parsing/writing and checked feature loading.
#include "formats/features_io.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/file_util.h"
#include "formats/npy.h"

namespace reid::formats {
namespace {

constexpr int64_t kMaxLine = 1 << 16;
// 10 million rows of 100 bytes: far above any test split.
constexpr uint64_t kMaxMetaCsvBytes = uint64_t{1} << 30;

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k) {
    if (s[k] < '0' || s[k] > '9') return false;
  }
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || *end != '\0') return false;
  *out = v;
  return true;
}

std::string Shown(const std::string& line) {
  return line.size() > 80 ? line.substr(0, 77) + "..." : line;
}

}  // namespace

StatusOr<std::vector<MetaRow>> ParseMetaCsv(const std::string& text, const std::string& name) {
  std::vector<MetaRow> rows;
  std::istringstream in(text);
  std::string line;
  int64_t number = 0;
  bool header = false, blank_seen = false;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = name + ":" + std::to_string(number) + ": ";
    if (static_cast<int64_t>(line.size()) > kMaxLine) {
      return Status::InvalidArgument(where + "line longer than 64 KiB");
    }
    if (!header) {
      if (line != "path,pid,camid") {
        return Status::InvalidArgument(where + "expected the header 'path,pid,camid', got '" +
                                       Shown(line) + "'");
      }
      header = true;
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) {
      blank_seen = true;
      continue;
    }
    if (blank_seen) return Status::InvalidArgument(where + "a row after a blank line");
    const size_t c2 = line.rfind(',');
    const size_t c1 =
        c2 == std::string::npos || c2 == 0 ? std::string::npos : line.rfind(',', c2 - 1);
    MetaRow row;
    if (c1 == std::string::npos || !ParseInt(line.substr(c1 + 1, c2 - c1 - 1), &row.pid) ||
        !ParseInt(line.substr(c2 + 1), &row.camid)) {
      return Status::InvalidArgument(where +
                                     "expected 'path,pid,camid' with integer pid and "
                                     "camid, got '" +
                                     Shown(line) + "'");
    }
    row.path = line.substr(0, c1);
    rows.push_back(std::move(row));
  }
  if (!header)
    return Status::InvalidArgument(name + ": empty file (expected the header 'path,pid,camid')");
  return rows;
}

StatusOr<std::vector<MetaRow>> ReadMetaCsv(const std::string& path) {
  // Only a regular file (a FIFO blocked here before), bounded before anything is read.
  REID_ASSIGN_OR_RETURN(const std::string text,
                        base::ReadRegularFile(path, kMaxMetaCsvBytes, "a meta CSV file"));
  return ParseMetaCsv(text, path);
}

Status WriteMetaCsv(const std::string& path, const std::vector<MetaRow>& rows) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return Status::InvalidArgument(path + ": cannot write");
    out << "path,pid,camid\n";
    for (const MetaRow& r : rows) out << r.path << "," << r.pid << "," << r.camid << "\n";
    if (!out.flush()) return Status::Internal(path + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::Internal(path + ": rename failed");
  return Status::Ok();
}

StatusOr<torch::Tensor> ReadFeatures(const std::string& path, int64_t rows,
                                     const std::string& meta_name) {
  REID_ASSIGN_OR_RETURN(torch::Tensor t, formats::ReadNpy(path));
  if (t.dim() != 2 || t.size(1) < 1) {
    return Status::InvalidArgument(path + ": expected a 2-D (N, D) features array, got shape " +
                                   c10::str(t.sizes()));
  }
  if (!t.is_floating_point()) {
    return Status::InvalidArgument(path + ": expected float32 features, got " +
                                   std::string(c10::toString(t.scalar_type())));
  }
  t = t.to(torch::kFloat32).contiguous();
  if (rows >= 0 && t.size(0) != rows) {
    return Status::InvalidArgument(path + ": " + std::to_string(t.size(0)) + " rows, but " +
                                   meta_name + " describes " + std::to_string(rows));
  }
  const torch::Tensor bad = torch::logical_not(torch::isfinite(t)).any(1);  // (N)
  if (bad.any().item<bool>()) {
    const int64_t row = bad.nonzero()[0][0].item<int64_t>();
    return Status::InvalidArgument(path + ": row " + std::to_string(row) +
                                   " has a NaN or infinite value");
  }
  return t;
}

Status WriteFeatures(const std::string& path, const torch::Tensor& features) {
  const std::string tmp = path + ".tmp";
  REID_RETURN_IF_ERROR(formats::WriteNpy(tmp, features.to(torch::kFloat32).contiguous()));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    return Status::Internal(path + ": rename failed");
  return Status::Ok();
}

}  // namespace reid::formats
