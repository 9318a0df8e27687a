// Writes named tensors as a torch.save zip: the file Python's torch.save(OrderedDict) writes and
// torch.load(f, weights_only=True) loads (the restricted unpickler that torch >= 2.6 uses by
// default), e.g. a state dict for CLIP-ReID's load_param.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"

namespace reid::formats {

// The bytes of a torch.save zip of `tensors` (name, tensor), in order, under the top-level folder
// "archive/": data.pkl (pickle protocol 2: a collections.OrderedDict whose values are
// torch._utils._rebuild_tensor_v2(persistent storage, 0, size, stride, False, OrderedDict())),
// byteorder ("little"), data/<k> (each tensor's contiguous CPU copy, raw little-endian) and
// version. Dtypes: float32/64, float16, bfloat16, int64/32/16/8, uint8, bool; any device, stride
// and dimension count (0-dim and empty included). InvalidArgument (naming the tensor) for an
// undefined, non-strided (sparse, mkldnn) or other-dtype tensor, a repeated name or one that is not
// UTF-8.
StatusOr<std::string> SerializeTorchSave(
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

// Writes SerializeTorchSave(tensors) to `path` atomically: a temporary file in the same folder,
// fsync, rename over `path`, fsync of the folder. On failure nothing is left behind and the status
// names the path: InvalidArgument when `path` is a directory or its folder is not writable,
// NotFound when the folder does not exist, Internal for I/O errors.
Status WriteTorchSaveFile(const std::string& path,
                          const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

}  // namespace reid::formats
