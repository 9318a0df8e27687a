// Reading OpenAI TorchScript archives and torch.save zips, build_model's shape inference, and a
// strict load by name that reports every problem at once.
#include "trainer/model/weights.h"

#include <torch/script.h>

#include <fstream>
#include <sstream>

namespace reid::model {
namespace {

void Put(std::string name, const torch::Tensor& t, StateDict* out) {
  while (name.rfind("module.", 0) == 0) name.erase(0, 7);
  torch::Tensor v = t.detach();
  if (v.is_floating_point()) v = v.to(torch::kFloat);
  (*out)[name] = v.contiguous().clone();
}

bool ReadTorchScript(const std::string& path, StateDict* out, std::string* why) {
  try {
    torch::jit::Module m = torch::jit::load(path, torch::kCPU);
    for (const auto& p : m.named_parameters(/*recurse=*/true)) Put(p.name, p.value, out);
    for (const auto& b : m.named_buffers(/*recurse=*/true)) Put(b.name, b.value, out);
    return true;
  } catch (const c10::Error& e) {
    *why = e.what_without_backtrace();
    return false;
  }
}

bool ReadPickledDict(const std::string& path, StateDict* out, std::string* why) {
  StateDict raw;
  if (!ReadTorchSaveZip(path, &raw, why)) return false;
  for (const auto& [k, v] : raw) Put(k, v, out);
  return true;
}

int64_t Dim(const StateDict& sd, const std::string& key, int64_t dim, std::string* missing) {
  auto it = sd.find(key);
  if (it == sd.end() || it->second.dim() <= dim) {
    *missing += " " + key;
    return 1;
  }
  return it->second.size(dim < 0 ? it->second.dim() + dim : dim);
}

int64_t CountLayers(const StateDict& sd, const std::string& prefix) {
  std::set<std::string> ids;
  for (const auto& [k, v] : sd) {
    if (k.rfind(prefix, 0) != 0) continue;
    ids.insert(k.substr(prefix.size(), k.find('.', prefix.size()) - prefix.size()));
  }
  return static_cast<int64_t>(ids.size());
}

}  // namespace

bool ReadStateDict(const std::string& path, StateDict* out, std::string* error) {
  out->clear();
  if (!std::ifstream(path).good()) {
    *error = "cannot open weights file '" + path + "'";
    return false;
  }
  std::string why_jit, why_pickle;
  if (ReadTorchScript(path, out, &why_jit)) return true;
  out->clear();
  if (ReadPickledDict(path, out, &why_pickle)) return true;
  *error =
      "weights file '" + path +
      "' is neither a TorchScript archive nor a torch.save zip of a state dict (TorchScript: " +
      why_jit.substr(0, 200) + "; torch.save: " + why_pickle.substr(0, 200) + ")";
  return false;
}

bool InferClipShape(const StateDict& sd, ClipShape* s, std::string* error) {
  if (!sd.count("visual.proj")) {
    *error = "not an OpenAI CLIP ViT state dict: no key 'visual.proj'";
    return false;
  }
  std::string missing;
  VisionShape& v = s->vision;
  v.width = Dim(sd, "visual.conv1.weight", 0, &missing);
  v.patch = Dim(sd, "visual.conv1.weight", -1, &missing);
  v.stride = v.patch;
  v.layers = CountLayers(sd, "visual.transformer.resblocks.");
  v.heads = std::max<int64_t>(1, v.width / 64);
  const int64_t rows = Dim(sd, "visual.positional_embedding", 0, &missing);
  v.grid_h = v.grid_w = std::llround(std::sqrt(static_cast<double>(rows - 1)));
  v.output_dim = Dim(sd, "visual.proj", 1, &missing);
  TextShape& t = s->text;
  t.output_dim = Dim(sd, "text_projection", 1, &missing);
  t.context_length = Dim(sd, "positional_embedding", 0, &missing);
  t.vocab_size = Dim(sd, "token_embedding.weight", 0, &missing);
  t.width = Dim(sd, "ln_final.weight", 0, &missing);
  t.heads = std::max<int64_t>(1, t.width / 64);
  t.layers = CountLayers(sd, "transformer.resblocks.");
  if (!missing.empty() || v.layers < 2 || t.layers < 1 || v.grid_h * v.grid_w + 1 != rows) {
    *error = "cannot infer the CLIP shape: missing or malformed keys:" + missing +
             " (vision layers " + std::to_string(v.layers) + ", text layers " +
             std::to_string(t.layers) + ", positional rows " + std::to_string(rows) + ")";
    return false;
  }
  return true;
}

StateDict ModuleStateDict(const torch::nn::Module& module) {
  StateDict sd;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) sd[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) sd[b.key()] = b.value();
  return sd;
}

bool LoadStateDict(torch::nn::Module& module, const StateDict& sd, const std::string& source,
                   std::string* error, const std::set<std::string>& ignore) {
  StateDict own = ModuleStateDict(module);
  std::vector<std::string> unknown, missing, shape;
  for (const auto& [k, v] : sd) {
    if (ignore.count(k)) continue;
    auto it = own.find(k);
    if (it == own.end()) {
      unknown.push_back(k);
    } else if (it->second.sizes() != v.sizes()) {
      std::ostringstream os;
      os << k << " " << v.sizes() << " (model " << it->second.sizes() << ")";
      shape.push_back(os.str());
    }
  }
  for (const auto& [k, v] : own) {
    if (!sd.count(k)) missing.push_back(k);
  }
  if (!unknown.empty() || !missing.empty() || !shape.empty()) {
    std::ostringstream os;
    os << "weights '" << source << "' do not fit the model (" << unknown.size() << " unknown, "
       << missing.size() << " missing, " << shape.size() << " mis-shaped keys)";
    for (const auto& k : unknown) os << "\n  unknown key: " << k;
    for (const auto& k : missing) os << "\n  missing key: " << k;
    for (const auto& k : shape) os << "\n  shape mismatch: " << k;
    *error = os.str();
    return false;
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, v] : own) {
    if (ignore.count(k)) continue;
    v.copy_(sd.at(k));
  }
  return true;
}

Clip LoadClip(const std::string& path, std::string* error) {
  StateDict sd;
  ClipShape shape;
  if (!ReadStateDict(path, &sd, error)) return nullptr;
  if (!InferClipShape(sd, &shape, error)) {
    *error = "weights '" + path + "': " + *error;
    return nullptr;
  }
  Clip clip(shape);
  if (!LoadStateDict(*clip, sd, path, error, {"input_resolution", "context_length", "vocab_size"}))
    return nullptr;
  clip->eval();
  return clip;
}

}  // namespace reid::model
