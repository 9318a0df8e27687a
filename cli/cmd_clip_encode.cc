// `reid clip-encode`: CLIP image and text features of a checkpoint (OpenAI TorchScript archive or
// state-dict zip), as OpenAI's encode_image / encode_text, written as float32 .npy files.
#include <gflags/gflags.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <utility>

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

Status EncodeImages(model::ClipImpl& clip, const std::string& out_dir) {
  StatusOr<torch::Tensor> read = formats::ReadNpy(FLAGS_images_npy);
  if (!read.ok()) return Status::InvalidArgument("--images_npy: " + read.status().message());
  const torch::Tensor images = *read;
  const auto& v = clip.visual->shape();
  auto size = [&] { return std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)); };
  if (images.dim() != 4 || images.size(1) != 3 || images.scalar_type() != torch::kFloat) {
    std::ostringstream got;
    got << images.sizes() << " " << images.scalar_type();
    return Status::InvalidArgument("--images_npy " + FLAGS_images_npy +
                                   ": want float32 (N, 3, H, W), got " + got.str());
  }
  if (images.size(0) == 0 || images.size(2) < v.patch || images.size(3) < v.patch) {
    return Status::InvalidArgument("--images_npy " + FLAGS_images_npy + ": images " + size() +
                                   (images.size(0) == 0 ? " (none)" : "") +
                                   " are smaller than the patch " + std::to_string(v.patch));
  }
  auto grid = model::PatchGrid(images.size(2), images.size(3), v.patch, v.stride);
  if (grid != std::make_pair(v.grid_h, v.grid_w)) {
    return Status::InvalidArgument("--images_npy " + FLAGS_images_npy + ": images " + size() +
                                   " do not give the model's " + std::to_string(v.grid_h) + "x" +
                                   std::to_string(v.grid_w) + " patch grid (set --image_size)");
  }
  torch::Tensor features = clip.EncodeImage(images);  // (N, D)
  const Status written = formats::WriteNpy(out_dir + "/image_features.npy", features);
  if (!written.ok()) return Status::Internal(written.message());  // exit 1, as any write failure
  std::cout << "image_features.npy " << features.sizes() << "\n";
  return Status::Ok();
}

Status EncodeTexts(model::ClipImpl& clip, const std::string& out_dir) {
  StatusOr<std::unique_ptr<model::Tokenizer>> created = model::Tokenizer::Create(FLAGS_bpe_vocab);
  if (!created.ok()) return Status::InvalidArgument("--bpe_vocab: " + created.status().message());
  const model::Tokenizer* tokenizer = created->get();
  const auto& t = clip.shape().text;
  if (tokenizer->vocab_size() != t.vocab_size) {
    return Status::InvalidArgument("--bpe_vocab gives " + std::to_string(tokenizer->vocab_size()) +
                                   " ids but the checkpoint's vocabulary has " +
                                   std::to_string(t.vocab_size));
  }
  // Only a regular file of at most 256 MiB (a FIFO would block the read).
  StatusOr<std::unique_ptr<std::istream>> opened =
      base::OpenRegularFileStream(FLAGS_texts_file, uint64_t{256} << 20, "a texts file");
  if (!opened.ok()) return opened.status().Annotate("--texts_file");
  std::istream& in = **opened;
  std::vector<torch::Tensor> rows;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    StatusOr<std::vector<int64_t>> ids = tokenizer->Tokenize(line, t.context_length, false);
    if (!ids.ok()) {
      return Status::InvalidArgument("--texts_file " + FLAGS_texts_file + " line " +
                                     std::to_string(n) + ": " + ids.status().message());
    }
    ids->resize(t.context_length, 0);
    rows.push_back(torch::tensor(*ids, torch::kLong));
  }
  if (rows.empty()) {
    return Status::InvalidArgument("--texts_file " + FLAGS_texts_file + " has no lines");
  }
  torch::Tensor features = clip.EncodeText(torch::stack(rows));  // (N, D)
  const Status written = formats::WriteNpy(out_dir + "/text_features.npy", features);
  if (!written.ok()) return Status::Internal(written.message());  // exit 1, as any write failure
  std::cout << "text_features.npy " << features.sizes() << "\n";
  return Status::Ok();
}

// The patch grid of --image_size's H x W (parsed by ParseSize) for the model's patch and stride;
// InvalidArgument when the image is smaller than a patch or the grid too large.
StatusOr<std::pair<int64_t, int64_t>> GridOfImageSize(int64_t h, int64_t w,
                                                      const model::VisionShape& v) {
  if (h < v.patch || w < v.patch) {
    return Status::InvalidArgument("--image_size = " + FLAGS_image_size +
                                   ": smaller than the patch " + std::to_string(v.patch));
  }
  auto [gh, gw] = model::PatchGrid(h, w, v.patch, v.stride);
  if (gh * gw > kMaxGridCells) {
    return Status::InvalidArgument("--image_size = " + FLAGS_image_size + ": a " +
                                   std::to_string(gh) + "x" + std::to_string(gw) +
                                   " patch grid is more than " + std::to_string(kMaxGridCells) +
                                   " patches");
  }
  return std::make_pair(gh, gw);
}

Status ClipEncode() {
  if (FLAGS_weights.empty() || FLAGS_output_dir.empty() ||
      (FLAGS_images_npy.empty() && FLAGS_texts_file.empty())) {
    return Status::InvalidArgument(
        "needs --weights, --output_dir and --images_npy and/or --texts_file");
  }
  int64_t h = 0, w = 0;
  if (!FLAGS_image_size.empty() && !ParseSize(FLAGS_image_size, &h, &w)) {
    return Status::InvalidArgument("--image_size = '" + FLAGS_image_size.substr(0, 40) +
                                   "': want HxW with sides 1.." + std::to_string(kMaxImageSide) +
                                   ", e.g. 256x128");
  }
  const Status out_dir = CheckOutDir(FLAGS_output_dir);
  if (!out_dir.ok()) {
    return Status::InvalidArgument("--output_dir '" + FLAGS_output_dir + "' " + out_dir.message());
  }
  StatusOr<model::Clip> loaded = model::LoadClip(FLAGS_weights);
  if (!loaded.ok()) return Status::InvalidArgument("--weights: " + loaded.status().message());
  model::Clip clip = *loaded;
  torch::NoGradGuard no_grad;
  if (h > 0) {
    REID_ASSIGN_OR_RETURN(const auto grid, GridOfImageSize(h, w, clip->visual->shape()));
    clip->visual->ResizeGrid(grid.first, grid.second);
  }
  if (mkdir(FLAGS_output_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::InvalidArgument("--output_dir '" + FLAGS_output_dir +
                                   "': cannot create: " + strerror(errno));
  }
  if (!FLAGS_images_npy.empty()) REID_RETURN_IF_ERROR(EncodeImages(*clip, FLAGS_output_dir));
  if (!FLAGS_texts_file.empty()) REID_RETURN_IF_ERROR(EncodeTexts(*clip, FLAGS_output_dir));
  return Status::Ok();
}

}  // namespace

int RunClipEncode(int /*argc*/, char** /*argv*/,
                  const std::vector<std::string>& /*set_overrides*/) {
  const Status s = ClipEncode();
  return s.ok() ? kExitOk : Fail("clip-encode", s);
}

}  // namespace reid::trainer
