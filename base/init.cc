// GlobalInit and per-rank log files.
#include "base/init.h"

#include <glog/logging.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>
#include <string>

namespace reid::base {
namespace {

const char* g_program = "";

[[noreturn]] void OnTerminate() {
  std::string what = "std::terminate called without an active exception";
  if (const std::exception_ptr error = std::current_exception()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::bad_alloc&) {
      what = "out of memory (std::bad_alloc)";
    } catch (const std::exception& e) {
      what = e.what();  // LibTorch's c10::Error too; its backtrace follows the first line
    } catch (...) {
      what = "an exception of unknown type";
    }
  }
  what = what.substr(0, what.find('\n'));
  std::fprintf(stderr, "error: %s: %s\n", g_program, what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace

void InstallTerminateHandler(const char* program) {
  g_program = program;
  std::set_terminate(OnTerminate);
}

void ReexecWithPassiveOpenMP(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);  // the binary's own name
  if (n <= 0 || setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/1) != 0) return;
  path[n] = '\0';
  execv(path, argv);
  unsetenv("OMP_WAIT_POLICY");  // exec failed: carry on as started
}

void KeepFreedMemory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
  mallopt(M_TRIM_THRESHOLD, INT_MAX);   // never give the heap's top back
  mallopt(M_TOP_PAD, 64 << 20);         // and grow it in 64 MB steps
#endif
}

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
