// An exclusive lock on a run's output directory, so that two `reid train` cannot write the same
// checkpoints at once: flock(2) on DIR/train.lock. The kernel releases it when the holder exits
// in any way, so the lock of a killed run is never stale: the next run takes it over. The holder
// writes its PID and host into the file, so that a refused run can name it. Under mpirun only
// rank 0 takes it (the ranks of one job share the directory).
#pragma once

#include <memory>
#include <string>

#include "base/status.h"

namespace reid::trainer {

class OutputDirLock {
 public:
  // Creates `dir` when missing and takes the lock without waiting. InvalidArgument
  //   "--output_dir=DIR is in use by another reid train (pid P on host H; lock file
  //   DIR/train.lock)"
  // when another process holds it, or naming the path when the directory or the lock file cannot
  // be created (or the lock file is not a regular file).
  static StatusOr<std::unique_ptr<OutputDirLock>> Acquire(const std::string& dir);
  ~OutputDirLock();  // releases the lock (closes the descriptor); the file stays
  OutputDirLock(const OutputDirLock&) = delete;
  OutputDirLock& operator=(const OutputDirLock&) = delete;

  const std::string& path() const { return path_; }
  // "pid P on host H" of the run that held the lock before and ended without releasing it
  // cleanly or did (the file keeps its last holder); empty for a new lock file.
  const std::string& previous_holder() const { return previous_holder_; }

 private:
  OutputDirLock(int fd, std::string path, std::string previous)
      : fd_(fd), path_(std::move(path)), previous_holder_(std::move(previous)) {}
  int fd_;
  std::string path_;
  std::string previous_holder_;
};

}  // namespace reid::trainer
