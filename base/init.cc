// GlobalInit and per-rank log files.
#include "base/init.h"

#include <glog/logging.h>

#include <filesystem>

namespace reid::base {

void GlobalInit(const char* argv0) {
  static bool done = false;
  if (done) return;
  done = true;
  FLAGS_logtostderr = true;
  FLAGS_colorlogtostderr = false;
  google::InitGoogleLogging(argv0);
  google::InstallFailureSignalHandler();
}

std::string SetupRunLogging(const std::string& run_dir, int rank) {
  const std::filesystem::path dir = std::filesystem::path(run_dir) / "logs";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / ("rank" + std::to_string(rank) + ".log")).string();
  FLAGS_logtostderr = false;
  FLAGS_alsologtostderr = false;
  FLAGS_stderrthreshold = google::GLOG_WARNING;  // progress goes to stdout (rank 0); INFO to the file
  FLAGS_timestamp_in_logfile_name = false;
  // One file for all severities: the INFO sink receives every message; others are disabled.
  google::SetLogDestination(google::GLOG_INFO, path.c_str());
  google::SetLogDestination(google::GLOG_WARNING, "");
  google::SetLogDestination(google::GLOG_ERROR, "");
  google::SetLogDestination(google::GLOG_FATAL, "");
  return path;
}

}  // namespace reid::base
