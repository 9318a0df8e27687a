// Reading OpenAI TorchScript archives and torch.save zips, build_model's shape inference, and a
// strict load by name that reports every problem at once.
#include "trainer/model/weights.h"

#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "base/file_util.h"

namespace reid::model {
namespace {

// ViT-L/14@336 in fp32 is 1.7 GB; 64 GiB leaves room for any CLIP or CLIP-ReID checkpoint.
constexpr uint64_t kMaxWeightsBytes = uint64_t{64} << 30;

void Put(std::string name, const torch::Tensor& t, StateDict* out) {
  while (name.rfind("module.", 0) == 0) name.erase(0, 7);
  torch::Tensor v = t.detach();
  if (v.is_floating_point()) v = v.to(torch::kFloat);
  (*out)[name] = v.contiguous().clone();
}

// One line of at most 300 characters: library messages may span lines or echo file content.
std::string OneLine(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  text.erase(0, text.find_first_not_of(' '));
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

// Which records the zip holds decides the reader: TorchScript archives have constants.pkl (and
// code/), torch.save zips only data.pkl and data/. An error saying why when it is not a PyTorch
// zip at all (LibTorch's exceptions converted here).
StatusOr<std::string> ZipKind(const std::string& path) {
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    if (zip.hasRecord("constants.pkl")) return std::string("torchscript");
    if (zip.hasRecord("data.pkl")) return std::string("torch.save");
    return Status::InvalidArgument("a zip without data.pkl");
  } catch (const c10::Error& e) {
    return Status::InvalidArgument(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::InvalidArgument(e.what());
  }
}

// LibTorch's TorchScript loader is not hardened against malformed archives: 3 of 60 mutated
// archives in tests/hostile_test.sh crash it (SIGSEGV). So it first runs in a forked child; only
// when the child survives does this process load the archive itself. An error saying why when the
// child died from a signal or took longer than two minutes.
Status ProbeTorchScriptInChild(const std::string& path) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return Status::Ok();  // cannot fork: load unprobed
  if (pid == 0) {
    const int null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0) dup2(null_fd, STDERR_FILENO);  // the parent reports
    signal(SIGSEGV, SIG_DFL);
    signal(SIGBUS, SIG_DFL);
    signal(SIGABRT, SIG_DFL);
    int code = 0;
    try {
      torch::jit::load(path, torch::kCPU);
    } catch (...) {
      code = 3;  // the parent's own load reports the exception
    }
    _exit(code);
  }
  int status = 0;
  for (int waited_ms = 0; waitpid(pid, &status, WNOHANG) == 0; waited_ms += 10) {
    if (waited_ms > 120000) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return Status::DataLoss("LibTorch's TorchScript loader did not finish within two minutes");
    }
    usleep(10000);
  }
  if (WIFSIGNALED(status)) {
    return Status::DataLoss("LibTorch's TorchScript loader crashed on it (signal " +
                            std::to_string(WTERMSIG(status)) + ")");
  }
  return Status::Ok();
}

// LibTorch's loader throws more than c10::Error on malformed archives (std::out_of_range, ...):
// every exception here is the file's fault and is converted to a DataLoss status.
StatusOr<StateDict> ReadTorchScript(const std::string& path) {
  try {
    torch::jit::Module m = torch::jit::load(path, torch::kCPU);
    StateDict out;
    for (const auto& p : m.named_parameters(/*recurse=*/true)) Put(p.name, p.value, &out);
    for (const auto& b : m.named_buffers(/*recurse=*/true)) Put(b.name, b.value, &out);
    return out;
  } catch (const c10::Error& e) {
    return Status::DataLoss(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::DataLoss(e.what());
  }
}

StatusOr<StateDict> ReadPickledDict(const std::string& path) {
  REID_ASSIGN_OR_RETURN(const StateDict raw, ReadTorchSaveZip(path));
  StateDict out;
  for (const auto& [k, v] : raw) Put(k, v, &out);
  return out;
}

// Size `dim` of sd[key], which must have `rank` dimensions, all non-empty; else 1 and the key is
// appended to *missing.
int64_t Dim(const StateDict& sd, const std::string& key, int64_t rank, int64_t dim,
            std::string* missing) {
  auto it = sd.find(key);
  if (it == sd.end() || it->second.dim() != rank || it->second.numel() == 0) {
    *missing += " " + key;
    return 1;
  }
  return it->second.size(dim);
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

StatusOr<StateDict> ReadStateDict(const std::string& path) {
  // The bounded regular-file check (opened O_NONBLOCK, fstat): a FIFO, a device or a directory
  // is refused before any reader opens the path.
  const Status regular = base::CheckRegularFile(path, kMaxWeightsBytes, "a weights file");
  if (!regular.ok()) {
    const std::string& m = regular.message();  // "PATH: why"
    return Status::NotFound("cannot open weights file '" + path +
                            "' (not a readable regular file: " +
                            (m.rfind(path + ": ", 0) == 0 ? m.substr(path.size() + 2) : m) + ")");
  }
  const StatusOr<std::string> zip_kind = ZipKind(path);
  if (!zip_kind.ok()) {
    return Status::InvalidArgument(
        "weights file '" + path +
        "' is neither a TorchScript archive nor a torch.save zip of a state dict (" +
        OneLine(zip_kind.status().message()) + ")");
  }
  const std::string& kind = *zip_kind;
  if (kind == "torchscript") {
    const char* allow = std::getenv("REID_TORCHSCRIPT");
    if (allow != nullptr && std::string(allow) == "0") {
      return Status::InvalidArgument(
          "weights file '" + path +
          "' is a TorchScript archive and REID_TORCHSCRIPT=0 forbids loading those "
          "(convert it to a torch.save state dict)");
    }
    const Status probed = ProbeTorchScriptInChild(path);
    if (!probed.ok()) {
      return Status::DataLoss("weights file '" + path +
                              "': bad torchscript archive: " + probed.message());
    }
  }
  StatusOr<StateDict> read = kind == "torchscript" ? ReadTorchScript(path) : ReadPickledDict(path);
  if (read.ok()) return read;
  return Status::DataLoss("weights file '" + path + "': bad " + kind +
                          " archive: " + OneLine(read.status().message()));
}

StatusOr<ClipShape> InferClipShape(const StateDict& sd) {
  if (!sd.count("visual.proj"))
    return Status::InvalidArgument("not an OpenAI CLIP ViT state dict: no key 'visual.proj'");
  std::string missing;
  ClipShape shape;
  ClipShape* s = &shape;
  VisionShape& v = s->vision;
  v.width = Dim(sd, "visual.conv1.weight", 4, 0, &missing);
  v.patch = Dim(sd, "visual.conv1.weight", 4, 3, &missing);
  if (Dim(sd, "visual.conv1.weight", 4, 2, &missing) != v.patch ||
      Dim(sd, "visual.conv1.weight", 4, 1, &missing) != 3)
    missing += " visual.conv1.weight(not (width, 3, patch, patch))";
  v.stride = v.patch;
  v.layers = CountLayers(sd, "visual.transformer.resblocks.");
  v.heads = std::max<int64_t>(1, v.width / 64);
  const int64_t rows = Dim(sd, "visual.positional_embedding", 2, 0, &missing);
  v.grid_h = v.grid_w = std::llround(std::sqrt(static_cast<double>(rows - 1)));
  v.output_dim = Dim(sd, "visual.proj", 2, 1, &missing);
  TextShape& t = s->text;
  t.output_dim = Dim(sd, "text_projection", 2, 1, &missing);
  t.context_length = Dim(sd, "positional_embedding", 2, 0, &missing);
  t.vocab_size = Dim(sd, "token_embedding.weight", 2, 0, &missing);
  t.width = Dim(sd, "ln_final.weight", 1, 0, &missing);
  t.heads = std::max<int64_t>(1, t.width / 64);
  t.layers = CountLayers(sd, "transformer.resblocks.");
  if (!missing.empty() || v.layers < 2 || t.layers < 1 || v.grid_h * v.grid_w + 1 != rows ||
      v.width % v.heads != 0 || t.width % t.heads != 0) {
    return Status::InvalidArgument(
        "cannot infer the CLIP shape: missing or malformed keys:" + missing + " (vision layers " +
        std::to_string(v.layers) + ", text layers " + std::to_string(t.layers) +
        ", positional rows " + std::to_string(rows) + ", widths " + std::to_string(v.width) + "/" +
        std::to_string(t.width) + ")");
  }
  // Building the model allocates what the shape implies; a few small keys must not make it
  // allocate gigabytes: the transformer blocks alone (12 w^2 per layer) must fit in what the file
  // holds (with slack for the fp32 copy).
  double stored = 0;
  for (const auto& [k, tensor] : sd) stored += static_cast<double>(tensor.numel());
  const double implied = 12.0 * (static_cast<double>(v.width) * v.width * v.layers +
                                 static_cast<double>(t.width) * t.width * t.layers);
  if (implied > 2 * stored + 1e6) {
    return Status::InvalidArgument(
        "cannot infer the CLIP shape: the keys describe transformers of " +
        std::to_string(static_cast<int64_t>(implied)) + " weights but hold only " +
        std::to_string(static_cast<int64_t>(stored)));
  }
  return shape;
}

StateDict ModuleStateDict(const torch::nn::Module& module) {
  StateDict sd;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) sd[p.key()] = p.value();
  for (const auto& b : module.named_buffers(/*recurse=*/true)) sd[b.key()] = b.value();
  return sd;
}

Status LoadStateDict(torch::nn::Module& module, const StateDict& sd, const std::string& source,
                     const std::set<std::string>& ignore) {
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
    return Status::InvalidArgument(os.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [k, v] : own) {
    if (ignore.count(k)) continue;
    v.copy_(sd.at(k));
  }
  return Status::Ok();
}

StatusOr<Clip> LoadClip(const std::string& path) {
  REID_ASSIGN_OR_RETURN(const StateDict sd, ReadStateDict(path));
  StatusOr<ClipShape> shape = InferClipShape(sd);
  if (!shape.ok()) return shape.status().Annotate("weights '" + path + "'");
  Clip clip(*shape);
  REID_RETURN_IF_ERROR(
      LoadStateDict(*clip, sd, path, {"input_resolution", "context_length", "vocab_size"}));
  clip->eval();
  return clip;
}

}  // namespace reid::model
