// Weight import: OpenAI TorchScript archives (ViT-B-16.pt) and torch.save state-dict zips
// (CLIP-ReID's .pth), read into a name -> fp32 tensor map and loaded by parameter name.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/torch_glog.h"
#include "formats/torch_save_reader.h"
#include "trainer/model/clip.h"

namespace reid::model {

using formats::StateDict;
using formats::ReadTorchSaveZip;

// Reads `path` as a TorchScript archive (parameters and buffers) or, failing that, as a torch.save
// zip of a dict of tensors. Strips leading "module." prefixes; floating tensors become fp32.
// An error naming the file when it is neither (NotFound when it cannot be opened).
StatusOr<StateDict> ReadStateDict(const std::string& path);

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
