// Dataset parsers: folder layouts, list files and CSV, with the reference code's rules.
#include "data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "base/file_util.h"

namespace fs = std::filesystem;

namespace reid::data {
namespace {

bool IsDir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

// The first of root/<candidate> (in order) that contains `marker`; root itself comes first.
std::string FindRoot(const std::string& root, const std::vector<std::string>& candidates,
                     const std::string& marker) {
  std::error_code ec;
  if (fs::exists(fs::path(root) / marker, ec)) return root;
  for (const std::string& c : candidates) {
    if (fs::exists(fs::path(root) / c / marker, ec)) return (fs::path(root) / c).string();
  }
  return "";
}

// A list file's size limit: MSMT17's largest list is 1.6 MB.
constexpr uint64_t kMaxListBytes = uint64_t{256} << 20;

// A list line as echoed in an error: at most 120 characters.
std::string Echo(const std::string& line) {
  return line.size() > 120 ? line.substr(0, 120) + "..." : line;
}

// A list file read whole through the bounded regular-file reader: a directory would read as an
// empty list and a FIFO would block, so both are refused before anything is read.
Status ReadList(const fs::path& path, std::istringstream* in, const std::string& what) {
  StatusOr<std::string> text = base::ReadRegularFile(path.string(), kMaxListBytes, "a " + what);
  if (!text.ok()) {
    if (text.status().code() == Status::Code::kNotFound) {
      return Status::NotFound(path.string() + ": missing " + what);
    }
    return text.status();  // "PATH: not a regular file (a FIFO)", "PATH: 300 MB is more than ..."
  }
  in->str(std::move(*text));
  return Status::Ok();
}

// Paths in list files are relative to the dataset and may not leave it: no absolute path, no
// ".." component (symbolic links inside the dataset are followed: that is its owner's choice).
bool StaysInside(const std::string& rel) {
  const fs::path p(rel);
  if (rel.empty() || p.is_absolute()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

bool ParseInt(const std::string& s, int* v) {
  if (s.empty()) return false;
  size_t used = 0;
  try {
    *v = std::stoi(s, &used);
  } catch (...) {
    return false;
  }
  return used == s.size();
}

// Market-1501 / DukeMTMC-reID folder: every *.jpg, pid and camera from `([-\d]+)_c(\d)`.
Status ParseFolder(const fs::path& dir, std::vector<Sample>* out) {
  if (!IsDir(dir)) return Status::NotFound(dir.string() + ": missing folder");
  static const std::regex pattern(R"(([-\d]+)_c(\d))");
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".jpg") files.push_back(e.path().string());
  }
  if (ec) return Status::InvalidArgument(dir.string() + ": cannot list: " + ec.message());
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    // The reference searches the whole path; the file name alone gives the same answer for the
    // real datasets and cannot be fooled by a parent folder such as "run1_c2".
    const std::string name = fs::path(f).filename().string();
    std::smatch m;
    int pid = 0, cam = 0;
    if (!std::regex_search(name, m, pattern))
      return Status::InvalidArgument(f + ": file name does not match <pid>_c<camera>");
    if (!ParseInt(m[1], &pid) || !ParseInt(m[2], &cam)) {
      return Status::InvalidArgument(f + ": pid " + Echo(m[1]) + " is out of range (-1.." +
                                     std::to_string(std::numeric_limits<int>::max()) + ")");
    }
    if (pid == -1) continue;  // junk
    if (pid < 0 || cam < 1) {
      return Status::InvalidArgument(f + ": bad pid " + std::to_string(pid) + " or camera c" +
                                     std::to_string(cam) + " (cameras start at c1)");
    }
    out->push_back({f, pid, cam - 1});
  }
  return Status::Ok();
}

// Relabels train pids to 0..N-1 in ascending pid order.
void Relabel(Dataset* d) {
  std::set<int> pids;
  for (const Sample& s : d->train) pids.insert(s.pid);
  std::map<int, int> label;
  for (int p : pids) label.emplace(p, static_cast<int>(label.size()));
  for (Sample& s : d->train) s.pid = label[s.pid];
  d->num_train_pids = static_cast<int>(pids.size());
}

Status LoadMarketLike(const std::string& root, const std::vector<std::string>& names,
                      const std::string& what, Dataset* d) {
  d->root = FindRoot(root, names, "bounding_box_train");
  if (d->root.empty()) {
    std::string tried = root + "/bounding_box_train";
    for (const std::string& n : names) tried += ", " + root + "/" + n + "/bounding_box_train";
    return Status::NotFound(root + ": no " + what + " folder found (tried " + tried + ")");
  }
  const fs::path r(d->root);
  for (auto [sub, split] :
       {std::pair{"bounding_box_train", &d->train}, std::pair{"query", &d->query},
        std::pair{"bounding_box_test", &d->gallery}}) {
    REID_RETURN_IF_ERROR(ParseFolder(r / sub, split));
  }
  Relabel(d);
  return Status::Ok();
}

// MSMT17 list file: "<relative path> <pid>" per line; camera = int(rel.split('_')[2]) - 1.
Status ParseMsmtList(const fs::path& list, const fs::path& image_dir, std::vector<Sample>* out) {
  std::istringstream in;
  REID_RETURN_IF_ERROR(ReadList(list, &in, "list file"));
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::string where = list.string() + ":" + std::to_string(line_no) + ": ";
    const size_t space = line.find(' ');
    int pid = 0;
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos ||
        !ParseInt(line.substr(space + 1), &pid)) {
      return Status::InvalidArgument(where + "expected '<relative path> <pid>', got '" +
                                     Echo(line) + "'");
    }
    const std::string rel = line.substr(0, space);
    if (!StaysInside(rel)) {
      return Status::InvalidArgument(where + "path '" + Echo(rel) +
                                     "' leaves the dataset (absolute or with '..')");
    }
    std::vector<std::string> parts;
    std::stringstream ss(rel);
    for (std::string p; std::getline(ss, p, '_');) parts.push_back(p);
    int cam = 0;
    if (parts.size() < 3 || !ParseInt(parts[2], &cam) || cam < 1) {
      return Status::InvalidArgument(where + "no camera (third '_' field, from 1) in '" +
                                     Echo(rel) + "'");
    }
    if (pid == -1) continue;
    if (pid < 0) return Status::InvalidArgument(where + "negative pid " + std::to_string(pid));
    out->push_back({(image_dir / rel).string(), pid, cam - 1});
  }
  return Status::Ok();
}

Status LoadMsmt17(const std::string& root, Dataset* d) {
  d->root = FindRoot(root, {"MSMT17", "MSMT17_V1", "MSMT17_V2"}, "list_train.txt");
  if (d->root.empty()) {
    return Status::NotFound(root + ": no MSMT17 folder found (tried " + root + ", " + root +
                            "/MSMT17, " + root + "/MSMT17_V1, " + root +
                            "/MSMT17_V2, each holding list_train.txt)");
  }
  const fs::path r(d->root);
  // V1 folders are train/ and test/; V2 names them mask_train_v2/ and mask_test_v2/.
  fs::path train_dir = r / "train", test_dir = r / "test";
  if (!IsDir(train_dir) && IsDir(r / "mask_train_v2")) train_dir = r / "mask_train_v2";
  if (!IsDir(test_dir) && IsDir(r / "mask_test_v2")) test_dir = r / "mask_test_v2";
  if (!IsDir(train_dir))
    return Status::NotFound(train_dir.string() + ": missing folder (nor mask_train_v2)");
  if (!IsDir(test_dir))
    return Status::NotFound(test_dir.string() + ": missing folder (nor mask_test_v2)");
  for (auto [list, dir, split] : {std::tuple{"list_train.txt", train_dir, &d->train},
                                  std::tuple{"list_val.txt", train_dir, &d->train},
                                  std::tuple{"list_query.txt", test_dir, &d->query},
                                  std::tuple{"list_gallery.txt", test_dir, &d->gallery}}) {
    REID_RETURN_IF_ERROR(ParseMsmtList(r / list, dir, split));
  }
  // No relabel: the reference asserts the train pids are exactly 0..N-1.
  std::set<int> pids;
  for (const Sample& s : d->train) pids.insert(s.pid);
  if (!pids.empty() &&
      (*pids.begin() != 0 || *pids.rbegin() != static_cast<int>(pids.size()) - 1)) {
    return Status::InvalidArgument(
        (r / "list_train.txt").string() + " + list_val.txt: train pids are not 0.." +
        std::to_string(pids.size() - 1) + " (found " + std::to_string(*pids.begin()) + ".." +
        std::to_string(*pids.rbegin()) + ")");
  }
  d->num_train_pids = static_cast<int>(pids.size());
  return Status::Ok();
}

// Camera ids index the SIE embedding (one row each): a bound keeps a hostile list from sizing it.
constexpr int kMaxCameraId = 9999;

// CSV split: "path,pid,camid" per line (camid 0-based, path relative to the CSV's folder and
// inside it); an optional header line starting with "path".
Status ParseCsv(const fs::path& csv, std::vector<Sample>* out) {
  std::istringstream in;
  REID_RETURN_IF_ERROR(ReadList(csv, &in, "CSV file"));
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("path", 0) == 0)) continue;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string p; std::getline(ss, p, ',');) f.push_back(p);
    int pid = 0, cam = 0;
    if (f.size() != 3 || f[0].empty() || !ParseInt(f[1], &pid) || !ParseInt(f[2], &cam) ||
        cam < 0 || cam > kMaxCameraId || pid < -1) {
      return Status::InvalidArgument(csv.string() + ":" + std::to_string(line_no) +
                                     ": expected 'path,pid,camid' (pid >= -1, 0 <= camid <= " +
                                     std::to_string(kMaxCameraId) + "), got '" + Echo(line) + "'");
    }
    if (!StaysInside(f[0])) {
      return Status::InvalidArgument(csv.string() + ":" + std::to_string(line_no) + ": path '" +
                                     Echo(f[0]) +
                                     "' leaves the dataset folder (absolute or with '..')");
    }
    if (pid == -1) continue;
    out->push_back({(csv.parent_path() / f[0]).string(), pid, cam});
  }
  return Status::Ok();
}

Status LoadCsv(const std::string& root, Dataset* d) {
  d->root = root;
  if (!IsDir(root)) return Status::NotFound(root + ": missing folder");
  for (auto [name, split] : {std::pair{"train.csv", &d->train}, std::pair{"query.csv", &d->query},
                             std::pair{"gallery.csv", &d->gallery}}) {
    REID_RETURN_IF_ERROR(ParseCsv(fs::path(root) / name, split));
  }
  Relabel(d);
  return Status::Ok();
}

}  // namespace

bool ParseDatasetKind(const std::string& name, DatasetKind* kind) {
  if (name == "market1501" || name == "synthetic") {
    *kind = DatasetKind::kMarket1501;
  } else if (name == "dukemtmcreid" || name == "dukemtmc") {
    *kind = DatasetKind::kDukeMtmc;
  } else if (name == "msmt17") {
    *kind = DatasetKind::kMsmt17;
  } else if (name == "csv") {
    *kind = DatasetKind::kCsv;
  } else {
    return false;
  }
  return true;
}

namespace {

Status LoadSplits(DatasetKind kind, const std::string& root, Dataset* out) {
  switch (kind) {
    case DatasetKind::kMarket1501:
      return LoadMarketLike(root, {"Market-1501-v15.09.15", "Market-1501"}, "Market-1501", out);
    case DatasetKind::kDukeMtmc:
      return LoadMarketLike(root, {"DukeMTMC-reID", "dukemtmcreid/DukeMTMC-reID"}, "DukeMTMC-reID",
                            out);
    case DatasetKind::kMsmt17:
      return LoadMsmt17(root, out);
    case DatasetKind::kCsv:
      return LoadCsv(root, out);
  }
  return Status::InvalidArgument("unknown dataset kind");
}

}  // namespace

StatusOr<Dataset> LoadDataset(DatasetKind kind, const std::string& root) {
  if (root.empty()) return Status::InvalidArgument("no data root given");
  if (!IsDir(root)) return Status::NotFound(root + ": missing folder");
  Dataset out;
  REID_RETURN_IF_ERROR(LoadSplits(kind, root, &out));
  for (auto [name, split] : {std::pair{"train", &out.train}, std::pair{"query", &out.query},
                             std::pair{"gallery", &out.gallery}}) {
    if (split->empty()) {
      return Status::InvalidArgument(out.root + ": the " + std::string(name) +
                                     " split has no images");
    }
  }
  // SIE indexes its embedding by camera id, in training and at test time: size it by the largest
  // id of any split, so gaps in the ids (CSV lists, subsets) stay in range.
  for (const auto* split : {&out.train, &out.query, &out.gallery}) {
    for (const Sample& s : *split) out.num_cameras = std::max(out.num_cameras, s.camid + 1);
  }
  return out;
}

SplitStats ComputeStats(const std::vector<Sample>& split) {
  std::set<int> pids, cams;
  for (const Sample& s : split) {
    pids.insert(s.pid);
    cams.insert(s.camid);
  }
  return {static_cast<int>(pids.size()), static_cast<int>(split.size()),
          static_cast<int>(cams.size())};
}

std::string StatsTable(const Dataset& d) {
  std::string out =
      "  ----------------------------------------\n"
      "  subset   | # ids | # images | # cameras\n"
      "  ----------------------------------------\n";
  char line[128];
  for (auto [name, split] : {std::pair{"train", &d.train}, std::pair{"query", &d.query},
                             std::pair{"gallery", &d.gallery}}) {
    const SplitStats s = ComputeStats(*split);
    std::snprintf(line, sizeof(line), "  %-8s | %5d | %8d | %9d\n", name, s.ids, s.images,
                  s.cameras);
    out += line;
  }
  return out + "  ----------------------------------------\n";
}

std::string StatsJson(const Dataset& d) {
  std::string out = "{";
  for (auto [name, split] : {std::pair{"train", &d.train}, std::pair{"query", &d.query},
                             std::pair{"gallery", &d.gallery}}) {
    const SplitStats s = ComputeStats(*split);
    if (out.size() > 1) out += ",";
    out += "\"" + std::string(name) + "\":{\"ids\":" + std::to_string(s.ids) +
           ",\"images\":" + std::to_string(s.images) + ",\"cameras\":" + std::to_string(s.cameras) +
           "}";
  }
  return out + "}";
}

}  // namespace reid::data
