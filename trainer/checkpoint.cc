// Atomic checkpoint directories with checksummed files, the index, pruning and verification.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace reid::trainer {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kMaxMetaBytes = 64 << 20;  // meta.pb holds a config and a file list
constexpr int64_t kMaxFileBytes = int64_t{1} << 40;
constexpr const char* kMeta = "meta.pb";
constexpr const char* kMetaText = "meta.txtpb";
constexpr const char* kIndex = "index.txtpb";

uint32_t Crc32(const std::string& bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t pos = 0;
  while (pos < bytes.size()) {  // zlib takes uInt lengths
    const size_t n = std::min<size_t>(bytes.size() - pos, 1u << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data() + pos), static_cast<uInt>(n));
    pos += n;
  }
  return static_cast<uint32_t>(crc);
}

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// Tests inject a write failure into the N-th commit of this process
// (REID_FAULT_CHECKPOINT_WRITE=N).
bool InjectedFailure(int commit) {
  const char* v = std::getenv("REID_FAULT_CHECKPOINT_WRITE");
  return v != nullptr && std::atoi(v) == commit;
}

Status WriteFileSynced(const std::string& path, const std::string& bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::Internal(Errno("cannot create", path));
  size_t pos = 0;
  while (pos < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + pos, bytes.size() - pos);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string e = Errno("cannot write", path);
      ::close(fd);
      return Status::Internal(e);
    }
    pos += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string e = Errno("cannot fsync", path);
    ::close(fd);
    return Status::Internal(e);
  }
  if (::close(fd) != 0) return Status::Internal(Errno("cannot close", path));
  return Status::Ok();
}

Status SyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::Internal(Errno("cannot open directory", path));
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Status::Internal(Errno("cannot fsync directory", path));
}

// Reads at most `limit` bytes; DataLoss when the file is larger.
StatusOr<std::string> ReadBounded(const std::string& path, int64_t limit) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return Status::NotFound(path + ": " + ec.message());
  if (static_cast<int64_t>(size) > limit) {
    return Status::DataLoss(path + ": " + std::to_string(size) + " bytes, more than the " +
                            std::to_string(limit) + " allowed");
  }
  std::ifstream in(path, std::ios::binary);
  std::string bytes(size, '\0');
  if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) {
    return Status::DataLoss(path + ": cannot read " + std::to_string(size) + " bytes");
  }
  return bytes;
}

bool SafeFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

Status ReadMeta(const std::string& path, proto::CheckpointMeta* meta) {
  const std::string meta_path = path + "/" + kMeta;
  if (!fs::is_directory(path)) return Status::NotFound(path + ": not a checkpoint directory");
  if (!fs::exists(meta_path))
    return Status::NotFound(path + ": no " + kMeta + " (not a checkpoint)");
  StatusOr<std::string> bytes = ReadBounded(meta_path, kMaxMetaBytes);
  if (!bytes.ok()) return bytes.status();
  if (!meta->ParseFromString(*bytes)) return Status::DataLoss(meta_path + ": cannot be parsed");
  if (meta->format_version() != 1) {
    return Status::DataLoss(meta_path + ": format_version " +
                            std::to_string(meta->format_version()) + " (this build reads 1)");
  }
  return Status::Ok();
}

}  // namespace

std::string SerializeTensors(const NamedTensors& tensors) {
  torch::serialize::OutputArchive archive;
  for (const auto& [name, t] : tensors) archive.write(name, t.detach().cpu());
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes, const std::string& what) {
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(bytes.data(), bytes.size());
    NamedTensors out;
    for (const std::string& key : archive.keys()) {
      torch::Tensor t;
      archive.read(key, t);
      out.emplace_back(key, t);
    }
    return out;
  } catch (const std::exception& e) {  // LibTorch's boundary: converted once, here
    return Status::DataLoss(what + ": not a tensor archive (" +
                            std::string(e.what()).substr(0, 200) + ")");
  }
}

Status CopyTensorsByName(const NamedTensors& loaded, const NamedTensors& target,
                         const std::string& what) {
  std::map<std::string, torch::Tensor> by_name(loaded.begin(), loaded.end());
  std::vector<std::string> problems;
  for (const auto& [name, t] : target) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      problems.push_back(name + " missing");
    } else if (it->second.sizes() != t.sizes()) {
      std::ostringstream s;
      s << name << " has shape " << it->second.sizes() << ", the model " << t.sizes();
      problems.push_back(s.str());
    }
  }
  if (by_name.size() != target.size() && problems.empty()) {
    std::set<std::string> known;
    for (const auto& [name, t] : target) known.insert(name);
    for (const auto& [name, t] : loaded) {
      if (!known.count(name)) problems.push_back(name + " not in the model");
    }
  }
  if (!problems.empty()) {
    std::string msg = what + ": " + std::to_string(problems.size()) + " mismatch(es):";
    for (size_t i = 0; i < problems.size() && i < 8; ++i) msg += " " + problems[i] + ";";
    return Status::InvalidArgument(msg);
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : target) {
    torch::Tensor dst = t;
    dst.copy_(by_name[name]);
  }
  return Status::Ok();
}

std::string CheckpointName(int stage, int64_t next_epoch, int64_t next_step) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "s%d-e%04lld-i%06lld", stage, static_cast<long long>(next_epoch),
                static_cast<long long>(next_step));
  return buf;
}

std::vector<std::string> CheckpointStore::CommittedNames() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string n = entry.path().filename().string();
    if (entry.is_directory() && n.size() > 1 && n[0] == 's' && fs::exists(entry.path() / kMeta)) {
      names.push_back(n);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

Status CheckpointStore::WriteIndex(const proto::CheckpointIndex& index) const {
  std::string text;
  google::protobuf::TextFormat::PrintToString(index, &text);
  const std::string tmp = dir_ + "/" + kIndex + ".tmp";
  REID_RETURN_IF_ERROR(WriteFileSynced(tmp, text));
  if (std::rename(tmp.c_str(), (dir_ + "/" + kIndex).c_str()) != 0) {
    return Status::Internal(Errno("cannot rename", tmp));
  }
  return SyncDirectory(dir_);
}

void CheckpointStore::Prune(int keep_last_n, bool keep_best, proto::CheckpointIndex* index) const {
  const std::vector<std::string> names = CommittedNames();
  std::set<std::string> keep;
  for (size_t i = names.size() - std::min<size_t>(names.size(), keep_last_n); i < names.size();
       ++i) {
    keep.insert(names[i]);
  }
  double best_map = -1;
  std::string best, last_stage1;
  for (const std::string& n : names) {
    proto::CheckpointMeta meta;
    if (!ReadMeta(dir_ + "/" + n, &meta).ok()) continue;
    if (meta.stage() == 1) last_stage1 = n;
    auto it = meta.metrics().find("mAP");
    if (it != meta.metrics().end() && it->second > best_map) {
      best_map = it->second;
      best = n;
    }
  }
  if (keep_best && !best.empty()) keep.insert(best);
  if (!last_stage1.empty()) keep.insert(last_stage1);
  index->clear_kept();
  for (const std::string& n : names) {
    if (keep.count(n)) {
      index->add_kept(n);
    } else {
      std::error_code ec;
      fs::remove_all(dir_ + "/" + n, ec);
      if (ec)
        LOG(WARNING) << "cannot remove old checkpoint " << dir_ << "/" << n << ": " << ec.message();
    }
  }
  if (keep_best && !best.empty()) index->set_best(best);
}

Status CheckpointStore::Commit(const std::string& name, proto::CheckpointMeta meta,
                               const CheckpointFiles& files, int keep_last_n, bool keep_best) {
  ++commits_;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return Status::Internal("cannot create " + dir_ + ": " + ec.message());
  const std::string tmp = dir_ + "/.tmp-" + name;
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec))
    return Status::Internal("cannot create " + tmp + ": " + ec.message());
  auto fail = [&](const Status& s) {
    fs::remove_all(tmp, ec);
    return s.Annotate("checkpoint " + name + " not written (the previous ones are intact)");
  };
  meta.clear_files();
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& [file, bytes] = files[i];
    CHECK(SafeFileName(file)) << file;
    if (i == files.size() / 2 && InjectedFailure(commits_)) {
      return fail(Status::Internal("injected write failure (REID_FAULT_CHECKPOINT_WRITE)"));
    }
    Status s = WriteFileSynced(tmp + "/" + file, bytes);
    if (!s.ok()) return fail(s);
    proto::FileEntry* e = meta.add_files();
    e->set_path(file);
    e->set_size_bytes(static_cast<int64_t>(bytes.size()));
    e->set_crc32(Crc32(bytes));
  }
  std::string text;
  google::protobuf::TextFormat::PrintToString(meta, &text);
  for (Status s :
       {WriteFileSynced(tmp + "/" + kMetaText, text),
        WriteFileSynced(tmp + "/" + kMeta, meta.SerializeAsString()), SyncDirectory(tmp)}) {
    if (!s.ok()) return fail(s);
  }
  const std::string final_dir = dir_ + "/" + name;
  const std::string old = dir_ + "/.old-" + name;
  fs::remove_all(old, ec);
  if (fs::exists(final_dir)) fs::rename(final_dir, old, ec);
  if (std::rename(tmp.c_str(), final_dir.c_str()) != 0)
    return fail(Status::Internal(Errno("cannot rename", tmp)));
  REID_RETURN_IF_ERROR(SyncDirectory(dir_));
  fs::remove_all(old, ec);
  proto::CheckpointIndex index;
  index.set_latest(name);
  Prune(keep_last_n, keep_best, &index);
  return WriteIndex(index).Annotate("checkpoint index " + dir_ + "/" + kIndex);
}

StatusOr<std::string> CheckpointStore::FindLatestValid() const {
  std::vector<std::string> names = CommittedNames();
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    const std::string path = dir_ + "/" + *it;
    proto::CheckpointMeta meta;
    Status s = VerifyCheckpoint(path, &meta);
    if (s.ok()) return path;
    LOG(WARNING) << "skipping damaged checkpoint: " << s.message();
  }
  return Status::NotFound("no valid checkpoint in " + dir_);
}

Status VerifyCheckpoint(const std::string& path, proto::CheckpointMeta* meta) {
  REID_RETURN_IF_ERROR(ReadMeta(path, meta));
  for (const proto::FileEntry& e : meta->files()) {
    StatusOr<std::string> bytes = ReadCheckpointFile(path, *meta, e.path());
    if (!bytes.ok()) return bytes.status();
  }
  return Status::Ok();
}

StatusOr<std::string> ReadCheckpointFile(const std::string& path, const proto::CheckpointMeta& meta,
                                         const std::string& name) {
  for (const proto::FileEntry& e : meta.files()) {
    if (e.path() != name) continue;
    const std::string file = path + "/" + name;
    if (!SafeFileName(name) || e.size_bytes() < 0 || e.size_bytes() > kMaxFileBytes) {
      return Status::DataLoss(path + "/" + kMeta + ": bad entry for '" + name + "'");
    }
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) return Status::DataLoss(file + ": missing (" + ec.message() + ")");
    if (static_cast<int64_t>(size) != e.size_bytes()) {
      return Status::DataLoss(file + ": " + std::to_string(size) + " bytes, meta.pb says " +
                              std::to_string(e.size_bytes()));
    }
    StatusOr<std::string> bytes = ReadBounded(file, e.size_bytes());
    if (!bytes.ok()) return Status::DataLoss(bytes.status().message());
    if (Crc32(*bytes) != e.crc32())
      return Status::DataLoss(file + ": CRC-32 mismatch (file damaged)");
    return bytes;
  }
  return Status::NotFound(path + ": no file '" + name + "' in the checkpoint");
}

StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  if (fs::exists(path + "/" + kMeta)) return path;
  if (fs::is_directory(path + "/checkpoints")) {
    return CheckpointStore(path + "/checkpoints").FindLatestValid();
  }
  if (fs::exists(path + "/" + kIndex)) return CheckpointStore(path).FindLatestValid();
  if (!fs::exists(path)) return Status::NotFound(path + ": no such checkpoint");
  return Status::NotFound(path + ": not a checkpoint (no " + kMeta + ")");
}

}  // namespace reid::trainer
