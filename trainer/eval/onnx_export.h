// The inference model as an ONNX model (`reid export --format=onnx`): a ModelProto written with
// protobuf against ONNX's own schema (libonnx's generated classes) and checked with ONNX's C++
// checker. The graph is the eval-mode, fp32 forward of InferenceModel spelled out in standard
// opset-17 operators (Conv, LayerNormalization, MatMul, Softmax, Sigmoid, BatchNormalization,
// Gather, ...) with the weights as initializers, so that ONNX Runtime, OpenVINO, TensorRT and
// DeepStream run it without custom operators.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "base/status.h"
#include "trainer/eval/inference_model.h"

namespace reid::trainer {

// The opset (default domain) and IR version of the exported model: opset 17 is the first with
// LayerNormalization; IR 8 is what ONNX 1.12 writes for it and what every ONNX Runtime 1.1x-1.2x
// reads.
inline constexpr int64_t kOnnxOpset = 17;
inline constexpr int64_t kOnnxIrVersion = 8;

// What the consumer needs besides the graph; stored as metadata_props.
struct OnnxExportInfo {
  // The per-channel normalisation the input must already have: (x / 255 - mean) / std, RGB.
  std::array<double, 3> mean = {0.5, 0.5, 0.5};
  std::array<double, 3> std = {0.5, 0.5, 0.5};
  // The input size (pixels); it must give the model's positional grid.
  int64_t height = 256, width = 128;
  // "before" or "after" the BN necks; must match the model's neck_after(); "" takes the model's.
  std::string neck;
  std::string source_checkpoint;  // the checkpoint the model was read from (metadata only)
  std::string producer_version;   // reid-train's version (ModelProto.producer_version)
};

// The serialized ModelProto of `model` (its eval-mode forward, fp32):
//   input  `images`   float32 (N, 3, height, width), already normalised;
//   input  `camids`   int64 (N) 0-based camera ids, only when the model has SIE;
//   output `features` float32 (N, W + D) = model->forward(images[, camids]) (not L2-normalised).
// N is dynamic (dim_param "N"); height and width are fixed. metadata_props: mean, std,
// input_height, input_width, neck_feat, feature_dim, num_cameras (SIE only), source_checkpoint,
// producer. Layers, widths, heads, patch, stride and grid are read from the model's modules and
// tensors. InvalidArgument for a model or info the graph cannot express (a non-fp32 tensor,
// an input size that does not give the positional grid, BN without running statistics, a neck
// that contradicts the model); Internal with the checker's message when ONNX's checker or its
// strict shape inference rejects the result.
StatusOr<std::string> ExportOnnx(InferenceModel& model, const OnnxExportInfo& info);

}  // namespace reid::trainer
