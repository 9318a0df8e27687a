// `reid version`: version, source revision, LibTorch, BLAS, CUDA/NCCL and MPI availability.
#include <ATen/Parallel.h>
#include <link.h>
#include <mpi.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <climits>
#include <cstdlib>
#include <iostream>
#include <string>

#include "base/build_info.h"
#include "cli/commands.h"

#ifdef REID_HAVE_NCCL
#include <nccl.h>
#endif

namespace reid::trainer {
namespace {

// Resolved paths of the loaded shared objects whose name mentions BLAS (the one LibTorch uses).
std::string LoadedBlas() {
  std::string found;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        const std::string name = info->dlpi_name ? info->dlpi_name : "";
        // cuBLAS is the GPU's BLAS, not the one behind CPU matrix products.
        if ((name.find("blas") == std::string::npos && name.find("mkl") == std::string::npos) ||
            name.find("cublas") != std::string::npos) {
          return 0;
        }
        char resolved[PATH_MAX];
        auto* out = static_cast<std::string*>(data);
        if (!out->empty()) *out += ", ";
        *out += realpath(name.c_str(), resolved) ? resolved : name;
        return 0;
      },
      &found);
  // Official LibTorch builds link MKL statically: no shared BLAS shows up.
  if (found.empty()) return "none loaded as a shared library (built into LibTorch, e.g. MKL)";
  if (found.find("openblas") != std::string::npos) return "OpenBLAS (" + found + ")";
  if (found.find("mkl") != std::string::npos) return "MKL (" + found + ")";
  return "reference BLAS, slow: install libopenblas0-pthread (" + found + ")";
}

std::string MpiLibrary() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(version, &length);
  std::string text(version, length);
  const size_t end = text.find_first_of(",\n");
  return end == std::string::npos ? text : text.substr(0, end);
}

std::string NcclVersion() {
#ifdef REID_HAVE_NCCL
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "compiled in, library not loadable";
  return "compiled in, library " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) +
         "." + std::to_string(v % 100);
#else
  return "not compiled in";
#endif
}

}  // namespace

int RunVersion(int /*argc*/, char** /*argv*/, const std::vector<std::string>& /*set_overrides*/) {
  std::cout << "reid-train " << base::Version() << "\n"
            << "git sha:      " << base::GitSha() << "\n"
            << "LibTorch:     " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "."
            << TORCH_VERSION_PATCH << " (intra-op threads " << at::get_num_threads() << ")\n"
            << "BLAS:         " << LoadedBlas() << "\n"
            << "CUDA toolkit: "
            << (base::BuiltWithCudaToolkit() ? "compiled in" : "not compiled in") << "\n"
            << "CUDA devices: " << (torch::cuda::is_available() ? torch::cuda::device_count() : 0)
            << (torch::cuda::is_available() ? "" : " (LibTorch without CUDA or no GPU)") << "\n"
            << "NCCL:         " << NcclVersion() << "\n"
            << "MPI:          " << MpiLibrary() << "\n";
  return kExitOk;
}

}  // namespace reid::trainer
