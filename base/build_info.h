// Facts fixed at build time: version, source revision, optional components compiled in.
#pragma once

#include <string>

namespace reid::base {

std::string Version();        // project version, e.g. "0.1.0"
std::string GitSha();         // source revision at build time ("unknown" outside git), "-dirty" if edited
bool BuiltWithCudaToolkit();  // CUDA code (NCCL backend, GPU tests) compiled in
bool BuiltWithNccl();         // NCCL communicator compiled in

}  // namespace reid::base
