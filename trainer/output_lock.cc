// flock(2) on OUTPUT_DIR/train.lock; the file records "pid P host H" of the holder.
#include "trainer/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

namespace reid::trainer {
namespace {

constexpr const char* kLockFile = "train.lock";

// The lock file's content ("pid P host H"), at most 4 KiB, as "pid P on host H"; empty when
// there is none or it is not in that form.
std::string ReadHolder(int fd) {
  char buf[4096];
  const ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return "";
  std::istringstream in(std::string(buf, static_cast<size_t>(n)));
  std::string pid_word, pid, host_word, host;
  if (!(in >> pid_word >> pid >> host_word >> host) || pid_word != "pid" || host_word != "host")
    return "";
  return "pid " + pid.substr(0, 20) + " on host " + host.substr(0, 255);
}

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == 0) return "unknown";
  return host;
}

}  // namespace

StatusOr<std::unique_ptr<OutputDirLock>> OutputDirLock::Acquire(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    return Status::InvalidArgument("--output_dir=" + dir + ": exists and is not a directory");
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return Status::InvalidArgument("--output_dir=" + dir + ": cannot create: " + ec.message());
  }
  const std::string path = dir + "/" + kLockFile;
  // No link is followed and nothing blocks: a link or a FIFO planted under this name is refused.
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
  if (fd < 0) {
    return Status::InvalidArgument("--output_dir=" + dir + ": cannot open the lock file " + path +
                                   " (" + std::strerror(errno) + ")");
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return Status::InvalidArgument("--output_dir=" + dir + ": the lock file " + path +
                                   " is not a regular file");
  }
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    std::string holder = ReadHolder(fd);
    close(fd);
    if (err == EWOULDBLOCK) {
      return Status::InvalidArgument("--output_dir=" + dir + " is in use by another reid train (" +
                                     (holder.empty() ? std::string("holder unknown") : holder) +
                                     "; lock file " + path + ")");
    }
    return Status::InvalidArgument("--output_dir=" + dir + ": cannot lock " + path + " (" +
                                   std::strerror(err) + ")");
  }
  std::string previous = ReadHolder(fd);
  const std::string mine = "pid " + std::to_string(getpid()) + " host " + HostName() + "\n";
  if (ftruncate(fd, 0) != 0 ||
      pwrite(fd, mine.data(), mine.size(), 0) != static_cast<ssize_t>(mine.size())) {
    const std::string why = std::strerror(errno);
    close(fd);
    return Status::InvalidArgument("--output_dir=" + dir + ": cannot write the lock file " + path +
                                   " (" + why + ")");
  }
  return std::unique_ptr<OutputDirLock>(new OutputDirLock(fd, path, std::move(previous)));
}

OutputDirLock::~OutputDirLock() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace reid::trainer
