// Minimal .npy (NumPy format 1.0/2.0) reading and writing for float32/float64/int32/int64 arrays in
// C order: the interchange format of `reid clip-encode` and the parity tests.
#pragma once

#include <string>

#include "base/torch_glog.h"

namespace reid::model {

// Reads `path` into a CPU tensor (float64 becomes float32). False with *error naming the file
// when it is not a C-order .npy of a supported dtype.
bool ReadNpy(const std::string& path, torch::Tensor* out, std::string* error);

// Writes a float32 or int64 tensor. False with *error when the file cannot be written.
bool WriteNpy(const std::string& path, const torch::Tensor& t, std::string* error);

}  // namespace reid::model
