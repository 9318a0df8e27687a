// Bounded regular-file reads: stat before open (no device is opened), open O_NONBLOCK (a FIFO
// swapped in between cannot block), fstat the descriptor, then read at most its size + 1.
#include "base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <limits>

namespace reid::base {
namespace {

// "a FIFO", "a directory", ... for the message of a non-regular file.
const char* KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "an unknown kind of file";
}

Status OpenFailed(const std::string& path, int err) {
  const std::string msg = path + ": cannot open (" + std::strerror(err) + ")";
  if (err == ENOENT || err == ENOTDIR) return Status::NotFound(msg);
  // Out of descriptors or memory, or an I/O error: the system's fault, not the file's.
  if (err == EMFILE || err == ENFILE || err == ENOMEM || err == EIO) return Status::Internal(msg);
  return Status::InvalidArgument(msg);
}

Status CheckStat(const std::string& path, const struct stat& st, uint64_t max_bytes,
                 const std::string& what) {
  if (!S_ISREG(st.st_mode)) {
    return Status::InvalidArgument(path + ": not a regular file (" + KindOf(st.st_mode) + ")");
  }
  const uint64_t size = st.st_size < 0 ? 0 : static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return Status::InvalidArgument(path + ": " + FormatBytes(size) + " is more than the " +
                                   FormatLimit(max_bytes) + " limit for " +
                                   (what.empty() ? std::string("a file") : what));
  }
  return Status::Ok();
}

// Owns a descriptor.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Gives up ownership.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Checks `path` without opening anything that is not a regular file, then opens it and checks
// the descriptor again (the path may have been swapped in between). On success *fd owns it and
// *size is its size.
Status OpenChecked(const std::string& path, uint64_t max_bytes, const std::string& what, int* fd,
                   uint64_t* size) {
  *fd = -1;
  struct stat st;
  // stat first: opening a device can have effects of its own (a tape rewinds, a tty attaches).
  if (stat(path.c_str(), &st) != 0) return OpenFailed(path, errno);
  REID_RETURN_IF_ERROR(CheckStat(path, st, max_bytes, what));
  int opened;
  do {
    opened = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  } while (opened < 0 && errno == EINTR);
  if (opened < 0) return OpenFailed(path, errno);
  Fd owner(opened);
  if (fstat(opened, &st) != 0) {
    return Status::Internal(path + ": cannot stat (" + std::strerror(errno) + ")");
  }
  REID_RETURN_IF_ERROR(CheckStat(path, st, max_bytes, what));
  *size = static_cast<uint64_t>(st.st_size);
  *fd = owner.release();  // the caller closes it
  return Status::Ok();
}

// Reads the opened file of fstat size `size` into `out` (a std::string or vector<uint8_t>),
// asking for one byte more than the size to notice a file that grows.
template <typename Container>
Status ReadAll(const std::string& path, int fd, uint64_t size, Container* out) {
  if (size >= std::numeric_limits<size_t>::max() || size >= out->max_size()) {
    return Status::InvalidArgument(path + ": " + FormatBytes(size) + " does not fit in memory");
  }
  out->resize(static_cast<size_t>(size) + 1);
  size_t got = 0;
  while (got < out->size()) {
    const ssize_t n = read(fd, reinterpret_cast<char*>(out->data()) + got, out->size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::DataLoss(path + ": read error (" + std::strerror(errno) + ")");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  if (got != size) return Status::DataLoss(path + ": changed size while being read");
  out->resize(got);
  return Status::Ok();
}

// A read-only stream buffer over a descriptor it owns.
class FdReadBuffer : public std::streambuf {
 public:
  explicit FdReadBuffer(int fd) : fd_(fd) {}
  ~FdReadBuffer() override { close(fd_); }
  FdReadBuffer(const FdReadBuffer&) = delete;
  FdReadBuffer& operator=(const FdReadBuffer&) = delete;

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    ssize_t n;
    do {
      n = read(fd_, buffer_, sizeof(buffer_));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return traits_type::eof();  // an I/O error ends the stream as a short file
    setg(buffer_, buffer_, buffer_ + n);
    return traits_type::to_int_type(*gptr());
  }

 private:
  int fd_;
  char buffer_[1 << 16];
};

class FdReadStream : public std::istream {
 public:
  explicit FdReadStream(int fd) : std::istream(nullptr), buffer_(fd) { rdbuf(&buffer_); }

 private:
  FdReadBuffer buffer_;
};

template <typename Container>
StatusOr<Container> ReadBounded(const std::string& path, uint64_t max_bytes,
                                const std::string& what) {
  int raw = -1;
  uint64_t size = 0;
  REID_RETURN_IF_ERROR(OpenChecked(path, max_bytes, what, &raw, &size));
  Fd fd(raw);
  Container out;
  REID_RETURN_IF_ERROR(ReadAll(path, fd.get(), size, &out));
  return out;
}

}  // namespace

StatusOr<std::string> ReadRegularFile(const std::string& path, uint64_t max_bytes,
                                      const std::string& what) {
  return ReadBounded<std::string>(path, max_bytes, what);
}

StatusOr<std::vector<uint8_t>> ReadRegularFileBytes(const std::string& path, uint64_t max_bytes,
                                                    const std::string& what) {
  return ReadBounded<std::vector<uint8_t>>(path, max_bytes, what);
}

Status CheckRegularFile(const std::string& path, uint64_t max_bytes, const std::string& what) {
  int raw = -1;
  uint64_t size = 0;
  REID_RETURN_IF_ERROR(OpenChecked(path, max_bytes, what, &raw, &size));
  close(raw);
  return Status::Ok();
}

StatusOr<int> OpenRegularFile(const std::string& path, uint64_t max_bytes, const std::string& what,
                              uint64_t* size) {
  int fd = -1;
  uint64_t bytes = 0;
  REID_RETURN_IF_ERROR(OpenChecked(path, max_bytes, what, &fd, &bytes));
  if (size != nullptr) *size = bytes;
  return fd;
}

StatusOr<std::unique_ptr<std::istream>> OpenRegularFileStream(const std::string& path,
                                                              uint64_t max_bytes,
                                                              const std::string& what,
                                                              uint64_t* size) {
  REID_ASSIGN_OR_RETURN(const int fd, OpenRegularFile(path, max_bytes, what, size));
  return std::unique_ptr<std::istream>(new FdReadStream(fd));
}

Status CheckOutputFile(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("an empty output path");
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(path + ": exists and is not a regular file (" +
                                     KindOf(st.st_mode) + ")");
    }
    return Status::Ok();
  }
  const std::filesystem::path target(path);
  const std::filesystem::path folder =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(folder, ec)) {
    return Status::InvalidArgument(path + ": folder " + folder.string() + " does not exist");
  }
  return Status::Ok();
}

Status ReadRegularFileInChunks(const std::string& path, uint64_t max_bytes, const std::string& what,
                               size_t chunk_bytes,
                               const std::function<Status(const char* data, size_t n)>& consume) {
  int raw = -1;
  uint64_t size = 0;
  REID_RETURN_IF_ERROR(OpenChecked(path, max_bytes, what, &raw, &size));
  Fd fd(raw);
  std::vector<char> buffer(std::max<size_t>(chunk_bytes, 1));
  uint64_t got = 0;
  for (;;) {  // up to the size fstat gave, then one read more to notice a file that grew
    const size_t want =
        got < size ? static_cast<size_t>(std::min<uint64_t>(size - got, buffer.size())) : 1;
    const ssize_t n = read(fd.get(), buffer.data(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::DataLoss(path + ": read error (" + std::strerror(errno) + ")");
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
    if (got > size) break;
    REID_RETURN_IF_ERROR(consume(buffer.data(), static_cast<size_t>(n)));
  }
  if (got != size) return Status::DataLoss(path + ": changed size while being read");
  return Status::Ok();
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1000) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  static const char* const kUnits[] = {"kB", "MB", "GB", "TB", "PB", "EB"};
  double v = static_cast<double>(bytes);
  int u = -1;
  while (v >= 999.5 && u < 5) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), v < 9.95 ? "%.1f %s" : "%.0f %s", v, kUnits[u]);
  return buf;
}

std::string FormatLimit(uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = -1;
  uint64_t v = bytes;
  while (v >= 1024 && v % 1024 == 0 && u < 5) {
    v /= 1024;
    ++u;
  }
  if (u < 0) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  return std::to_string(v) + " " + kUnits[u];
}

Status WriteFileAtomically(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (path.empty()) return Status::InvalidArgument("an empty output path");
  if (fs::is_directory(path, ec))
    return Status::InvalidArgument(path + ": is a directory, not a file path");
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  if (!fs::is_directory(folder, ec))
    return Status::InvalidArgument(path + ": folder " + folder.string() + " does not exist");
  // A unique name beside the target, so that the rename stays in one file system.
  static std::atomic<uint64_t> counter{0};
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmp = (folder / ("." + target.filename().string() + ".tmp-" + std::to_string(::getpid()) +
                     "-" + std::to_string(counter++)))
              .string();
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    const int err = errno;
    const std::string why =
        path + ": cannot create a file in " + folder.string() + " (" + std::strerror(err) + ")";
    if (err == EACCES || err == EPERM || err == EROFS) return Status::InvalidArgument(why);
    return Status::Internal(why);
  }
  auto fail = [&](const std::string& what) {
    const std::string why = path + ": " + what + " (" + std::strerror(errno) + ")";
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    return Status::Internal(why);
  };
  size_t pos = 0;
  while (pos < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + pos, bytes.size() - pos);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("cannot write " + tmp);
    pos += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot fsync " + tmp);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) return fail("cannot close " + tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return fail("cannot rename " + tmp);
  const int dfd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // the rename is durable once the folder is synced
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::Ok();
}

}  // namespace reid::base
