// Reads torch.save zip files whose object is a dict of tensors (a state dict such as
// CLIP-ReID's released .pth, or our own checkpoints' tensor files) without running any code.
#pragma once

#include <istream>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"

namespace reid::formats {

using StateDict = std::map<std::string, torch::Tensor>;

// Reads a torch.save zip whose object is a dict of tensors (or {"state_dict": dict}), as stored.
// DataLoss with the reader's message (not naming the file) when it is not one.
StatusOr<StateDict> ReadTorchSaveZip(const std::string& path);
// The same from a stream holding the zip (the fuzz target reads from memory).
StatusOr<StateDict> ReadTorchSaveZip(std::istream* in);

// Limits of the torch.save reader (the file is untrusted): objects in the pickle, nesting of its
// containers and dimensions of a tensor.
inline constexpr size_t kMaxPickleObjects = size_t{1} << 22;
inline constexpr int kMaxPickleDepth = 256;
inline constexpr size_t kMaxTensorDims = 64;

// OK when a view of `sizes` and `strides` (elements, all >= 0) starting at element `offset` lies
// inside a storage of `storage_numel` elements; computed without overflow. Else DataLoss saying
// what is out of bounds (e.g. "(offset 9) reads element 24 of a storage of 4 elements").
Status CheckStridedView(int64_t storage_numel, int64_t offset, const std::vector<int64_t>& sizes,
                        const std::vector<int64_t>& strides);

}  // namespace reid::formats
