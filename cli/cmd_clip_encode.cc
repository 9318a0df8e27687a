// `reid clip-encode`: CLIP image and text features of a checkpoint (OpenAI TorchScript archive or
// state-dict zip), as OpenAI's encode_image / encode_text, written as float32 .npy files.
#include <gflags/gflags.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>

#include "base/file_util.h"
#include "base/torch_glog.h"
#include "cli/commands.h"
#include "trainer/model/clip.h"
#include "formats/npy.h"
#include "trainer/model/tokenizer.h"
#include "trainer/model/weights.h"

DECLARE_string(bpe_vocab);
DEFINE_string(weights, "",
              "CLIP checkpoint: OpenAI TorchScript archive (ViT-B-16.pt) or torch.save "
              "state dict (.pth); reid train: replaces model.weights");
DEFINE_string(images_npy, "", "float32 (N, 3, H, W) images, already normalised");
DEFINE_string(image_size, "",
              "HxW: resize the positional embedding to this image's patch grid "
              "first, as CLIP-ReID does; empty = the checkpoint's grid");
DEFINE_string(texts_file, "", "One text per line");
DECLARE_string(output_dir);

namespace reid::trainer {
namespace {

// The largest image side --image_size accepts (CLIP-ReID uses 256x128; 4096 already gives a
// 256x256 grid of 16-pixel patches).
constexpr int64_t kMaxImageSide = 4096;
constexpr int64_t kMaxGridCells = 65536;  // positional embedding rows after resizing

// Parses HxW with 1 <= H, W <= kMaxImageSide; digits only (no sign, no overflow).
bool ParseSize(const std::string& s, int64_t* h, int64_t* w) {
  const size_t x = s.find('x');
  if (x == std::string::npos) return false;
  auto side = [](const std::string& digits, int64_t* out) {
    if (digits.empty() || digits.size() > 5 ||
        digits.find_first_not_of("0123456789") != std::string::npos)
      return false;
    *out = std::stoll(digits);
    return *out >= 1 && *out <= kMaxImageSide;
  };
  return side(s.substr(0, x), h) && side(s.substr(x + 1), w);
}

// OK when `dir` is a directory or can be made as one (its parent is a directory); else why not.
Status CheckOutDir(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::Ok();
    return Status::InvalidArgument("exists and is not a directory");
  }
  const size_t slash = dir.find_last_of('/');
  const std::string parent = slash == std::string::npos ? "." : dir.substr(0, slash + 1);
  if (stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status::NotFound("its parent folder '" + parent + "' does not exist");
  return Status::Ok();
}

int EncodeImages(model::ClipImpl& clip, const std::string& out_dir) {
  StatusOr<torch::Tensor> read = formats::ReadNpy(FLAGS_images_npy);
  if (!read.ok()) {
    std::cerr << "error: --images_npy: " << read.status().message() << "\n";
    return kExitUsage;
  }
  const torch::Tensor images = *read;
  const auto& v = clip.visual->shape();
  if (images.dim() != 4 || images.size(1) != 3 || images.scalar_type() != torch::kFloat) {
    std::cerr << "error: --images_npy " << FLAGS_images_npy << ": want float32 (N, 3, H, W), got "
              << images.sizes() << " " << images.scalar_type() << "\n";
    return kExitUsage;
  }
  if (images.size(0) == 0 || images.size(2) < v.patch || images.size(3) < v.patch) {
    std::cerr << "error: --images_npy " << FLAGS_images_npy << ": images " << images.size(2) << "x"
              << images.size(3) << (images.size(0) == 0 ? " (none)" : "")
              << " are smaller than the patch " << v.patch << "\n";
    return kExitUsage;
  }
  auto grid = model::PatchGrid(images.size(2), images.size(3), v.patch, v.stride);
  if (grid != std::make_pair(v.grid_h, v.grid_w)) {
    std::cerr << "error: --images_npy " << FLAGS_images_npy << ": images " << images.size(2) << "x"
              << images.size(3) << " do not give the model's " << v.grid_h << "x" << v.grid_w
              << " patch grid (set --image_size)\n";
    return kExitUsage;
  }
  torch::Tensor features = clip.EncodeImage(images);  // (N, D)
  const Status written = formats::WriteNpy(out_dir + "/image_features.npy", features);
  if (!written.ok()) {
    std::cerr << "error: " << written.message() << "\n";
    return kExitFailure;
  }
  std::cout << "image_features.npy " << features.sizes() << "\n";
  return kExitOk;
}

int EncodeTexts(model::ClipImpl& clip, const std::string& out_dir) {
  StatusOr<std::unique_ptr<model::Tokenizer>> created = model::Tokenizer::Create(FLAGS_bpe_vocab);
  if (!created.ok()) {
    std::cerr << "error: --bpe_vocab: " << created.status().message() << "\n";
    return kExitUsage;
  }
  const model::Tokenizer* tokenizer = created->get();
  const auto& t = clip.shape().text;
  if (tokenizer->vocab_size() != t.vocab_size) {
    std::cerr << "error: --bpe_vocab gives " << tokenizer->vocab_size()
              << " ids but the checkpoint's vocabulary has " << t.vocab_size << "\n";
    return kExitUsage;
  }
  // Only a regular file of at most 256 MiB (a FIFO would block the read).
  StatusOr<std::unique_ptr<std::istream>> opened =
      base::OpenRegularFileStream(FLAGS_texts_file, uint64_t{256} << 20, "a texts file");
  if (!opened.ok()) {
    std::cerr << "error: --texts_file: " << opened.status().message() << "\n";
    return opened.status().exit_code();
  }
  std::istream& in = **opened;
  std::vector<torch::Tensor> rows;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    StatusOr<std::vector<int64_t>> ids = tokenizer->Tokenize(line, t.context_length, false);
    if (!ids.ok()) {
      std::cerr << "error: --texts_file " << FLAGS_texts_file << " line " << n << ": "
                << ids.status().message() << "\n";
      return kExitUsage;
    }
    ids->resize(t.context_length, 0);
    rows.push_back(torch::tensor(*ids, torch::kLong));
  }
  if (rows.empty()) {
    std::cerr << "error: --texts_file " << FLAGS_texts_file << " has no lines\n";
    return kExitUsage;
  }
  torch::Tensor features = clip.EncodeText(torch::stack(rows));  // (N, D)
  const Status written = formats::WriteNpy(out_dir + "/text_features.npy", features);
  if (!written.ok()) {
    std::cerr << "error: " << written.message() << "\n";
    return kExitFailure;
  }
  std::cout << "text_features.npy " << features.sizes() << "\n";
  return kExitOk;
}

}  // namespace

int RunClipEncode(int /*argc*/, char** /*argv*/,
                  const std::vector<std::string>& /*set_overrides*/) {
  if (FLAGS_weights.empty() || FLAGS_output_dir.empty() ||
      (FLAGS_images_npy.empty() && FLAGS_texts_file.empty())) {
    std::cerr << "error: reid clip-encode needs --weights, --output_dir and --images_npy and/or "
                 "--texts_file\n";
    return kExitUsage;
  }
  int64_t h = 0, w = 0;
  if (!FLAGS_image_size.empty() && !ParseSize(FLAGS_image_size, &h, &w)) {
    std::cerr << "error: --image_size = '" << FLAGS_image_size.substr(0, 40)
              << "': want HxW with sides 1.." << kMaxImageSide << ", e.g. 256x128\n";
    return kExitUsage;
  }
  const Status out_dir = CheckOutDir(FLAGS_output_dir);
  if (!out_dir.ok()) {
    std::cerr << "error: --output_dir '" << FLAGS_output_dir << "' " << out_dir.message() << "\n";
    return kExitUsage;
  }
  StatusOr<model::Clip> loaded = model::LoadClip(FLAGS_weights);
  if (!loaded.ok()) {
    std::cerr << "error: --weights: " << loaded.status().message() << "\n";
    return kExitUsage;
  }
  model::Clip clip = *loaded;
  torch::NoGradGuard no_grad;
  if (h > 0) {
    const auto& v = clip->visual->shape();
    if (h < v.patch || w < v.patch) {
      std::cerr << "error: --image_size = " << FLAGS_image_size << ": smaller than the patch "
                << v.patch << "\n";
      return kExitUsage;
    }
    auto [gh, gw] = model::PatchGrid(h, w, v.patch, v.stride);
    if (gh * gw > kMaxGridCells) {
      std::cerr << "error: --image_size = " << FLAGS_image_size << ": a " << gh << "x" << gw
                << " patch grid is more than " << kMaxGridCells << " patches\n";
      return kExitUsage;
    }
    clip->visual->ResizeGrid(gh, gw);
  }
  if (mkdir(FLAGS_output_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::cerr << "error: --output_dir '" << FLAGS_output_dir
              << "': cannot create: " << strerror(errno) << "\n";
    return kExitUsage;
  }
  int status = kExitOk;
  if (!FLAGS_images_npy.empty()) status = EncodeImages(*clip, FLAGS_output_dir);
  if (status == kExitOk && !FLAGS_texts_file.empty()) status = EncodeTexts(*clip, FLAGS_output_dir);
  return status;
}

}  // namespace reid::trainer
