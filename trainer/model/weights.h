// Weight import: OpenAI TorchScript archives (ViT-B-16.pt) and torch.save state-dict zips
// (CLIP-ReID's .pth), read into a name -> fp32 tensor map and loaded by parameter name.
#pragma once

#include <istream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "trainer/model/clip.h"

namespace reid::model {

using StateDict = std::map<std::string, torch::Tensor>;

// Reads `path` as a TorchScript archive (parameters and buffers) or, failing that, as a torch.save
// zip of a dict of tensors. Strips leading "module." prefixes; floating tensors become fp32.
// An error naming the file when it is neither (NotFound when it cannot be opened).
StatusOr<StateDict> ReadStateDict(const std::string& path);

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

// OpenAI's build_model: infers the CLIP shape from an OpenAI-format state dict (visual.*,
// transformer.*, ...). Heads are width / 64 as in build_model. InvalidArgument when keys are
// missing or malformed.
StatusOr<ClipShape> InferClipShape(const StateDict& sd);

// Copies `sd` into the parameters and buffers of `module` by name. Every unknown, missing and
// mis-shaped key is listed in one InvalidArgument naming `source`; keys in `ignore` are skipped.
// Nothing is copied unless every key fits.
Status LoadStateDict(torch::nn::Module& module, const StateDict& sd, const std::string& source,
                     const std::set<std::string>& ignore = {});

// Reads an OpenAI-format checkpoint and builds CLIP from it (shape inferred, all keys checked).
StatusOr<Clip> LoadClip(const std::string& path);

// The name -> tensor map of a module's parameters and buffers (what LoadStateDict accepts).
StateDict ModuleStateDict(const torch::nn::Module& module);

}  // namespace reid::model
