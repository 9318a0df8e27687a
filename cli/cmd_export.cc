// `reid export`: a trained model as a file other tools load. --format=clipreid writes the state
// dict of CLIP-ReID's make_model (its keys and shapes, fp32, torch.save's zip format, loadable
// with torch.load(weights_only=True)); --format=onnx writes the inference model as ONNX (opset
// 17, dynamic batch, checked with ONNX's checker). The file is written under a temporary name and
// renamed, so a failed export leaves nothing behind.
#include <gflags/gflags.h>

#include <filesystem>
#include <iostream>

#include "base/build_info.h"
#include "base/file_util.h"
#include "cli/cmd_common.h"
#include "cli/commands.h"
#include "trainer/eval/onnx_export.h"
#include "formats/torch_save_writer.h"

DECLARE_string(checkpoint);
DECLARE_string(out);
DEFINE_string(format, "", "export: clipreid (CLIP-ReID state dict .pth) or onnx");

namespace reid::trainer {
namespace {

namespace fs = std::filesystem;

// Training-only parts of our model that CLIP-ReID's make_model has no place for.
bool IsTrainingOnly(const std::string& key) {
  return key.rfind("context_adjust.", 0) == 0 || key.rfind("cross_attention.", 0) == 0;
}

// The keys a CLIP-ReID state dict cannot do without (the rest follow from the model).
constexpr const char* kRequiredKeys[] = {
    "image_encoder.conv1.weight", "image_encoder.proj",         "text_encoder.text_projection",
    "prompt_learner.cls_ctx",     "classifier.weight",          "classifier_proj.weight",
    "bottleneck.running_mean",    "bottleneck_proj.running_var"};

// CLIP-ReID's state dict of the checkpoint: every tensor but the training-only modules, floating
// ones as fp32, in key order.
StatusOr<std::vector<std::pair<std::string, torch::Tensor>>> ClipReidTensors(
    const InferenceCheckpoint& c) {
  for (const char* k : kRequiredKeys) {
    if (!c.tensors.count(k)) {
      return Status::InvalidArgument(c.path + "/model.pt: no tensor '" + k +
                                     "' (a CLIP-ReID state dict needs it)");
    }
  }
  if (c.config.model().sie_camera() && !c.tensors.count("cv_embed")) {
    return Status::InvalidArgument(c.path + "/model.pt: SIE is on but there is no cv_embed");
  }
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [k, t] : c.tensors) {
    if (IsTrainingOnly(k)) continue;
    out.emplace_back(k, t.is_floating_point() ? t.to(torch::kFloat32) : t);
  }
  return out;
}

Status CheckOutPath(const std::string& out) {
  if (out.empty()) return Status::InvalidArgument("--out=FILE is required");
  std::error_code ec;
  if (fs::is_directory(out, ec)) {
    return Status::InvalidArgument("--out=" + out + " is a directory (give a file name)");
  }
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return Status::InvalidArgument("--out=" + out + ": folder " + parent.string() +
                                   " does not exist");
  }
  return Status::Ok();
}

Status ExportClipReid(const InferenceCheckpoint& c) {
  REID_ASSIGN_OR_RETURN(const auto tensors, ClipReidTensors(c));
  REID_RETURN_IF_ERROR(formats::WriteTorchSaveFile(FLAGS_out, tensors));
  const auto& m = c.config.model();
  const auto& size = c.config.input().size_test();
  std::cout << "wrote " << FLAGS_out << ": CLIP-ReID state dict, " << tensors.size() << " tensors, "
            << c.tensors.at("classifier.weight").size(0) << " classes, input " << size.height()
            << "x" << size.width() << ", stride " << m.stride_size() << ", neck_feat "
            << (m.neck_feat() == proto::ModelConfig::AFTER ? "after" : "before")
            << (m.sie_camera() ? ", SIE" : "") << "\n";
  size_t left_out = c.tensors.size() - tensors.size();
  if (left_out > 0) {
    std::cout << "left out " << left_out
              << " tensors of the training-only modules (context_adjust, cross_attention)\n";
  }
  return Status::Ok();
}

Status ExportOnnxFile(const InferenceCheckpoint& c) {
  REID_ASSIGN_OR_RETURN(InferenceModel model,
                        BuildInferenceModel(c.tensors, c.config, c.path + "/model.pt"));
  OnnxExportInfo info;
  const auto& in = c.config.input();
  for (int i = 0; i < 3; ++i) {
    info.mean[i] = in.pixel_mean_size() == 3 ? in.pixel_mean(i) : 0.5;
    info.std[i] = in.pixel_std_size() == 3 ? in.pixel_std(i) : 0.5;
  }
  info.height = in.size_test().height();
  info.width = in.size_test().width();
  info.source_checkpoint = c.path;
  info.producer_version = base::Version();
  REID_ASSIGN_OR_RETURN(const std::string bytes, ExportOnnx(model, info));
  REID_RETURN_IF_ERROR(base::WriteFileAtomically(FLAGS_out, bytes));
  std::cout << "wrote " << FLAGS_out << ": ONNX opset " << kOnnxOpset << ", input images (N, 3, "
            << info.height << ", " << info.width << ")" << (model->num_cameras() ? " + camids" : "")
            << ", output features (N, " << model->feature_dim() << "), " << bytes.size()
            << " bytes\n";
  return Status::Ok();
}

}  // namespace

int RunExport(int /*argc*/, char** /*argv*/, const std::vector<std::string>& set_overrides) {
  if (FLAGS_format != "clipreid" && FLAGS_format != "onnx") {
    return Fail("export", Status::InvalidArgument("--format='" + FLAGS_format +
                                                  "': expected clipreid or onnx"));
  }
  Status s = CheckOutPath(FLAGS_out);
  if (!s.ok()) return Fail("export", s);
  StatusOr<InferenceCheckpoint> c = OpenCheckpointFromFlags(set_overrides);
  if (!c.ok()) return Fail("export", c.status());
  s = FLAGS_format == "clipreid" ? ExportClipReid(*c) : ExportOnnxFile(*c);
  return s.ok() ? kExitOk : Fail("export", s);
}

}  // namespace reid::trainer
