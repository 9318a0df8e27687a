// Minimal .npy (NumPy format 1.0/2.0) reading and writing for float32/float64/int32/int64 arrays in
// C order: the interchange format of `reid clip-encode` and the parity tests.
#pragma once

#include <string>

#include "base/status.h"
#include "base/torch_glog.h"

namespace reid::formats {

// Reads `path` into a CPU tensor (float64 becomes float32). NotFound when it cannot be opened,
// InvalidArgument or DataLoss (naming the file) when it is not a C-order .npy of a supported dtype.
StatusOr<torch::Tensor> ReadNpy(const std::string& path);

// Writes a float32 or int64 tensor. InvalidArgument when the file cannot be created, Internal
// when writing it fails.
Status WriteNpy(const std::string& path, const torch::Tensor& t);

}  // namespace reid::formats
