// Weight import: OpenAI TorchScript archives (ViT-B-16.pt) and torch.save state-dict zips
// (CLIP-ReID's .pth), read into a name -> fp32 tensor map and loaded by parameter name.
#pragma once

#include <map>
#include <set>
#include <string>

#include "base/torch_glog.h"
#include "trainer/model/clip.h"

namespace reid::model {

using StateDict = std::map<std::string, torch::Tensor>;

// Reads `path` as a TorchScript archive (parameters and buffers) or, failing that, as a torch.save
// zip of a dict of tensors. Strips leading "module." prefixes; floating tensors become fp32.
// Returns false with *error naming the file when it is neither.
bool ReadStateDict(const std::string& path, StateDict* out, std::string* error);

// Reads a torch.save zip whose object is a dict of tensors (or {"state_dict": dict}), as stored.
bool ReadTorchSaveZip(const std::string& path, StateDict* out, std::string* error);

// OpenAI's build_model: infers the CLIP shape from an OpenAI-format state dict (visual.*,
// transformer.*, ...). Heads are width / 64 as in build_model.
bool InferClipShape(const StateDict& sd, ClipShape* shape, std::string* error);

// Copies `sd` into the parameters and buffers of `module` by name. Every unknown, missing and
// mis-shaped key is listed in one error naming `source`; keys in `ignore` are skipped.
bool LoadStateDict(torch::nn::Module& module, const StateDict& sd, const std::string& source,
                   std::string* error, const std::set<std::string>& ignore = {});

// Reads an OpenAI-format checkpoint and builds CLIP from it (shape inferred, all keys checked).
// Returns null with *error on failure.
Clip LoadClip(const std::string& path, std::string* error);

// The name -> tensor map of a module's parameters and buffers (what LoadStateDict accepts).
StateDict ModuleStateDict(const torch::nn::Module& module);

}  // namespace reid::model
