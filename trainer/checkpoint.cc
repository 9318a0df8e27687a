// Atomic checkpoint directories with checksummed files, the index, pruning and verification.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <google/protobuf/text_format.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <istream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <streambuf>
#include <tuple>

#include "base/build_info.h"
#include "base/file_util.h"
#include "formats/torch_save_writer.h"
#include "formats/torch_save_reader.h"

namespace reid::trainer {
namespace fs = std::filesystem;
namespace {

constexpr uint64_t kMaxMetaBytes = 64 << 20;  // meta.pb holds a config and a file list
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 40;
constexpr size_t kCrcChunkBytes = 4 << 20;
constexpr uint64_t kMiB = 1 << 20;
constexpr const char* kMeta = "meta.pb";
constexpr const char* kMetaText = "meta.txtpb";
constexpr const char* kIndex = "index.txtpb";

uint32_t Crc32Update(uint32_t crc, const char* data, size_t size) {
  uLong c = crc;
  size_t pos = 0;
  while (pos < size) {  // zlib takes uInt lengths
    const size_t n = std::min<size_t>(size - pos, 1u << 30);
    c = crc32(c, reinterpret_cast<const Bytef*>(data + pos), static_cast<uInt>(n));
    pos += n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t Crc32(const std::string& bytes) {
  return Crc32Update(static_cast<uint32_t>(crc32(0L, Z_NULL, 0)), bytes.data(), bytes.size());
}

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// The first line of `text`, at most `max` characters (LibTorch's messages span lines).
std::string OneLine(const std::string& text, size_t max = 240) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > max) line = line.substr(0, max) + "...";
  return line;
}

// A read-only, seekable stream over bytes in memory (the zip reader seeks), without a copy.
class MemoryStreamBuf : public std::streambuf {
 public:
  MemoryStreamBuf(const char* data, size_t size) {
    char* p = const_cast<char*>(data);  // never written: the get area only
    setg(p, p, p + size);
  }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    const off_type base = dir == std::ios_base::beg   ? 0
                          : dir == std::ios_base::cur ? gptr() - eback()
                                                      : egptr() - eback();
    const off_type target = base + off;
    if (target < 0 || target > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + target, egptr());
    return pos_type(target);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode mode) override {
    return seekoff(off_type(pos), std::ios_base::beg, mode);
  }
};

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

// A checkpoint file the bounded reader refused is damage (DataLoss naming it); the system's own
// failures (out of descriptors, I/O errors) stay Internal.
Status AsDamage(const Status& s, const std::string& file) {
  if (s.ok() || s.code() == Status::Code::kInternal) return s;
  if (s.code() == Status::Code::kNotFound) return Status::DataLoss(file + ": missing");
  return Status::DataLoss(s.message());
}

// A plain file name: no folder, no control character (a name is echoed in messages).
bool SafeFileName(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(),
                      [](char c) { return c == '/' || static_cast<unsigned char>(c) < 0x20; });
}

// meta.pb of `path`, parsed and checked for what every reader relies on (a short file list of
// plain names, each once, model.pt among them; a position a run writes); the format version is
// checked by the callers.
Status ParseMeta(const std::string& path, proto::CheckpointMeta* meta) {
  const std::string meta_path = path + "/" + kMeta;
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return Status::NotFound(path + ": not a checkpoint directory");
  if (!fs::exists(fs::symlink_status(meta_path, ec)))
    return Status::NotFound(path + ": no " + kMeta + " (not a checkpoint)");
  StatusOr<std::string> bytes = base::ReadRegularFile(meta_path, kMaxMetaBytes, kMeta);
  if (!bytes.ok()) return AsDamage(bytes.status(), meta_path);
  if (!meta->ParseFromString(*bytes)) return Status::DataLoss(meta_path + ": cannot be parsed");
  if (meta->files_size() > kMaxCheckpointFiles) {
    return Status::DataLoss(meta_path + ": lists " + std::to_string(meta->files_size()) +
                            " files (a checkpoint has at most " +
                            std::to_string(kMaxCheckpointFiles) + ")");
  }
  std::set<std::string> seen;
  for (const proto::FileEntry& e : meta->files()) {
    if (!SafeFileName(e.path()) || e.path() == kMeta || e.path() == kMetaText ||
        e.size_bytes() < 0 || static_cast<uint64_t>(e.size_bytes()) > kMaxFileBytes) {
      return Status::DataLoss(meta_path + ": bad entry for '" + OneLine(e.path(), 80) + "'");
    }
    if (!seen.insert(e.path()).second)
      return Status::DataLoss(meta_path + ": lists '" + OneLine(e.path(), 80) + "' twice");
  }
  if (!seen.count("model.pt")) {
    return Status::DataLoss(meta_path + ": lists no model.pt (" +
                            std::to_string(meta->files_size()) +
                            " files): the checkpoint has no model");
  }
  if ((meta->stage() != 1 && meta->stage() != 2) || meta->sampler().epoch() < 1 ||
      meta->sampler().step() < 0) {
    return Status::DataLoss(meta_path + ": position stage " + std::to_string(meta->stage()) +
                            " epoch " + std::to_string(meta->sampler().epoch()) + " step " +
                            std::to_string(meta->sampler().step()) +
                            " is not one a run writes (stage 1 or 2, epoch >= 1, step >= 0)");
  }
  return Status::Ok();
}

Status CheckFormatVersion(const std::string& path, const proto::CheckpointMeta& meta) {
  if (meta.format_version() == kCheckpointFormatVersion) return Status::Ok();
  const std::string where =
      path + "/" + kMeta + ": format_version " + std::to_string(meta.format_version());
  if (meta.format_version() == 1) {
    return Status::InvalidArgument(
        where +
        ", written by an earlier build: its tensor files are LibTorch archives, which "
        "only the TorchScript loader reads, and that loader runs code from the file; this "
        "build reads format " +
        std::to_string(kCheckpointFormatVersion) +
        " (torch.save zips) only. Resume it with the build that wrote it, or train anew");
  }
  return Status::InvalidArgument(where + " (this build reads " +
                                 std::to_string(kCheckpointFormatVersion) + ")");
}

const proto::FileEntry* FindEntry(const proto::CheckpointMeta& meta, const std::string& name) {
  for (const proto::FileEntry& e : meta.files()) {
    if (e.path() == name) return &e;
  }
  return nullptr;
}

// Checks entry `e` of checkpoint `path` against its file without holding it in memory: a regular
// file within its limit, of the listed size, CRC-32 computed over 4 MiB pieces.
Status VerifyFile(const std::string& path, const proto::CheckpointMeta& meta,
                  const proto::FileEntry& e) {
  const std::string file = path + "/" + e.path();
  const uint64_t limit = CheckpointFileLimit(meta, e.path());
  REID_RETURN_IF_ERROR(AsDamage(base::CheckRegularFile(file, limit, e.path()), file));
  std::error_code ec;
  const uint64_t size = fs::file_size(file, ec);
  if (ec) return Status::DataLoss(file + ": missing (" + ec.message() + ")");
  if (size != static_cast<uint64_t>(e.size_bytes())) {
    return Status::DataLoss(file + ": " + std::to_string(size) + " bytes, meta.pb says " +
                            std::to_string(e.size_bytes()));
  }
  uint32_t crc = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
  REID_RETURN_IF_ERROR(AsDamage(base::ReadRegularFileInChunks(file, size, e.path(), kCrcChunkBytes,
                                                              [&crc](const char* data, size_t n) {
                                                                crc = Crc32Update(crc, data, n);
                                                                return Status::Ok();
                                                              }),
                                file));
  if (crc != e.crc32()) return Status::DataLoss(file + ": CRC-32 mismatch (file damaged)");
  return Status::Ok();
}

// (stage, sampler epoch, sampler step, creation time): the order checkpoints were written in.
auto Position(const proto::CheckpointMeta& m) {
  return std::make_tuple(m.stage(), m.sampler().epoch(), m.sampler().step(), m.created_unix_ns());
}

}  // namespace

StatusOr<std::string> SerializeTensors(const NamedTensors& tensors) {
  StatusOr<std::string> bytes = formats::SerializeTorchSave(tensors);
  if (!bytes.ok()) return Status::Internal("cannot serialize tensors: " + bytes.status().message());
  return bytes;
}

StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes, const std::string& what) {
  MemoryStreamBuf buffer(bytes.data(), bytes.size());
  std::istream in(&buffer);
  StatusOr<formats::StateDict> sd = formats::ReadTorchSaveZip(&in);
  if (!sd.ok()) {
    return Status::DataLoss(what + ": not a checkpoint tensor file (" +
                            OneLine(sd.status().message(), 200) + ")");
  }
  return NamedTensors(sd->begin(), sd->end());
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

void StampBuildAndTime(proto::CheckpointMeta* meta) {
  meta->mutable_build()->set_version(base::Version());
  meta->mutable_build()->set_git_sha(base::GitSha());
  meta->mutable_build()->set_cuda(base::BuiltWithCudaToolkit());
  meta->mutable_build()->set_nccl(base::BuiltWithNccl());
  meta->mutable_build()->set_torch_version(TORCH_VERSION);
  meta->set_created_unix_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
}

std::string CheckpointName(int stage, int64_t next_epoch, int64_t next_step) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "s%d-e%04lld-i%06lld", stage, static_cast<long long>(next_epoch),
                static_cast<long long>(next_step));
  return buf;
}

std::vector<CheckpointStore::Listed> CheckpointStore::List(
    std::vector<std::string>* problems) const {
  static const std::regex kName("s[0-9]{1,9}-e[0-9]{1,18}-i[0-9]{1,18}");
  std::vector<Listed> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string n = entry.path().filename().string();
    std::error_code dir_ec;
    if (!std::regex_match(n, kName) || !entry.is_directory(dir_ec)) continue;
    const std::string path = dir_ + "/" + n;
    Listed l{n, {}};
    Status s = ParseMeta(path, &l.meta);
    if (!s.ok()) {
      if (problems != nullptr) problems->push_back("skipping damaged checkpoint: " + s.message());
      continue;
    }
    const std::string at =
        CheckpointName(l.meta.stage(), l.meta.sampler().epoch(), l.meta.sampler().step());
    if (at != n) {
      if (problems != nullptr) {
        problems->push_back("ignoring " + path + ": its meta.pb records the position " + at +
                            ", not the folder's name (not a checkpoint of this directory)");
      }
      continue;
    }
    out.push_back(std::move(l));
  }
  std::sort(out.begin(), out.end(), [](const Listed& a, const Listed& b) {
    return std::make_pair(Position(a.meta), a.name) < std::make_pair(Position(b.meta), b.name);
  });
  return out;
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

void CheckpointStore::Prune(int keep_last_n, bool keep_best, const std::string& committed,
                            proto::CheckpointIndex* index) const {
  std::vector<Listed> listed = List(nullptr);
  // Only checkpoints of this format are counted and pruned; older ones are left as they are.
  listed.erase(std::remove_if(listed.begin(), listed.end(),
                              [](const Listed& l) {
                                return l.meta.format_version() != kCheckpointFormatVersion;
                              }),
               listed.end());
  std::set<std::string> keep = {committed};
  for (size_t i = listed.size() - std::min<size_t>(listed.size(), std::max(keep_last_n, 0));
       i < listed.size(); ++i) {
    keep.insert(listed[i].name);
  }
  double best_map = -1;
  std::string best, last_stage1;
  for (const Listed& l : listed) {
    if (l.meta.stage() == 1) last_stage1 = l.name;
    auto it = l.meta.metrics().find("mAP");
    if (it != l.meta.metrics().end() && it->second > best_map) {
      best_map = it->second;
      best = l.name;
    }
  }
  if (keep_best && !best.empty()) keep.insert(best);
  if (!last_stage1.empty()) keep.insert(last_stage1);
  index->clear_kept();
  for (const Listed& l : listed) {
    if (keep.count(l.name)) {
      index->add_kept(l.name);
    } else {
      std::error_code ec;
      fs::remove_all(dir_ + "/" + l.name, ec);
      if (ec) {
        LOG(WARNING) << "cannot remove old checkpoint " << dir_ << "/" << l.name << ": "
                     << ec.message();
      }
    }
  }
  if (keep_best && !best.empty()) index->set_best(best);
}

Status CheckpointStore::Commit(const std::string& name, proto::CheckpointMeta meta,
                               const CheckpointFiles& files, int keep_last_n, bool keep_best) {
  ++commits_;
  CHECK(files.size() <= static_cast<size_t>(kMaxCheckpointFiles)) << files.size() << " files";
  CHECK_EQ(name, CheckpointName(meta.stage(), meta.sampler().epoch(), meta.sampler().step()));
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
  meta.set_format_version(kCheckpointFormatVersion);
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
  Prune(keep_last_n, keep_best, name, &index);
  return WriteIndex(index).Annotate("checkpoint index " + dir_ + "/" + kIndex);
}

StatusOr<std::string> CheckpointStore::FindLatestValid() const {
  std::vector<std::string> problems;
  const std::vector<Listed> listed = List(&problems);
  for (const std::string& p : problems) LOG(WARNING) << p;
  for (auto it = listed.rbegin(); it != listed.rend(); ++it) {
    const std::string path = dir_ + "/" + it->name;
    REID_RETURN_IF_ERROR(CheckFormatVersion(path, it->meta));
    proto::CheckpointMeta meta;
    Status s = VerifyCheckpoint(path, &meta);
    if (s.ok()) return path;
    if (s.code() == Status::Code::kInternal) return s;
    LOG(WARNING) << "skipping damaged checkpoint: " << s.message();
  }
  return Status::NotFound("no valid checkpoint in " + dir_);
}

std::vector<std::string> CheckpointStore::RemoveLeftovers() const {
  std::vector<std::string> notes;
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& n : names) {
    const std::string path = dir_ + "/" + n;
    std::error_code rm;
    if (n.rfind(".tmp-", 0) == 0 || n == std::string(kIndex) + ".tmp") {
      fs::remove_all(path, rm);
      notes.push_back(rm ? "cannot remove " + path + ": " + rm.message()
                         : "removed " + path + " (left by a run stopped while writing it)");
    } else if (n.rfind(".old-", 0) == 0 && n.size() > 5) {
      const std::string committed = dir_ + "/" + n.substr(5);
      if (!fs::exists(fs::symlink_status(committed, rm))) {
        fs::rename(path, committed, rm);
        notes.push_back(rm ? "cannot restore " + committed + ": " + rm.message()
                           : "restored " + committed + " from " + path +
                                 " (a run stopped while replacing it)");
      } else {
        fs::remove_all(path, rm);
        notes.push_back(rm ? "cannot remove " + path + ": " + rm.message()
                           : "removed " + path + " (left by a run stopped while replacing it)");
      }
    }
  }
  return notes;
}

Status ReadCheckpointMeta(const std::string& path, proto::CheckpointMeta* meta) {
  REID_RETURN_IF_ERROR(ParseMeta(path, meta));
  return CheckFormatVersion(path, *meta);
}

Status VerifyCheckpoint(const std::string& path, proto::CheckpointMeta* meta) {
  REID_RETURN_IF_ERROR(ReadCheckpointMeta(path, meta));
  for (const proto::FileEntry& e : meta->files()) REID_RETURN_IF_ERROR(VerifyFile(path, *meta, e));
  return Status::Ok();
}

uint64_t CheckpointFileLimit(const proto::CheckpointMeta& meta, const std::string& name) {
  const proto::FileEntry* model = FindEntry(meta, "model.pt");
  const uint64_t model_bytes =
      model == nullptr
          ? 0
          : std::min<uint64_t>(std::max<int64_t>(model->size_bytes(), 0), kMaxModelFileBytes);
  if (name == "model.pt") return kMaxModelFileBytes;
  if (name == "optimizer.pt") return 3 * model_bytes + 16 * kMiB;
  if (name == "class_centers.pt") return model_bytes + kMiB;
  if (name == "rng.pt") {
    const uint64_t ranks = std::clamp<int64_t>(meta.world_size(), 1, 1 << 20);
    return ranks * 64 * 1024 + kMiB;
  }
  if (name == "scaler.pt") return kMiB;
  return kMaxModelFileBytes;
}

StatusOr<std::string> ReadCheckpointFile(const std::string& path, const proto::CheckpointMeta& meta,
                                         const std::string& name, uint64_t max_bytes,
                                         const std::string& limit_what) {
  const proto::FileEntry* e = FindEntry(meta, name);
  if (e == nullptr) return Status::NotFound(path + ": no file '" + name + "' in the checkpoint");
  const std::string file = path + "/" + name;
  if (!SafeFileName(name) || e->size_bytes() < 0 ||
      static_cast<uint64_t>(e->size_bytes()) > kMaxFileBytes) {
    return Status::DataLoss(path + "/" + kMeta + ": bad entry for '" + OneLine(name, 80) + "'");
  }
  const uint64_t limit = max_bytes > 0 ? max_bytes : CheckpointFileLimit(meta, name);
  const std::string what = limit_what.empty() ? name : name + " (" + limit_what + ")";
  if (static_cast<uint64_t>(e->size_bytes()) > limit) {
    return Status::DataLoss(file + ": " + base::FormatBytes(e->size_bytes()) + " (" +
                            std::to_string(e->size_bytes()) + " bytes) is more than the " +
                            base::FormatLimit(limit) + " limit for " + what);
  }
  StatusOr<std::string> bytes = base::ReadRegularFile(file, limit, what);
  if (!bytes.ok()) return AsDamage(bytes.status(), file);
  if (bytes->size() != static_cast<uint64_t>(e->size_bytes())) {
    return Status::DataLoss(file + ": " + std::to_string(bytes->size()) + " bytes, meta.pb says " +
                            std::to_string(e->size_bytes()));
  }
  if (Crc32(*bytes) != e->crc32())
    return Status::DataLoss(file + ": CRC-32 mismatch (file damaged)");
  return bytes;
}

StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(path + "/" + kMeta, ec))) return path;
  if (fs::is_directory(path + "/checkpoints", ec)) {
    return CheckpointStore(path + "/checkpoints").FindLatestValid();
  }
  if (fs::exists(path + "/" + kIndex, ec)) return CheckpointStore(path).FindLatestValid();
  if (!fs::exists(path, ec)) return Status::NotFound(path + ": no such checkpoint");
  return Status::NotFound(path + ": not a checkpoint (no " + kMeta + ")");
}

}  // namespace reid::trainer
