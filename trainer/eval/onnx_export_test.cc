// ONNX export: the model passes ONNX's checker, and parsed back it has the promised interface
// (inputs, dynamic batch, output width, opset, IR version, metadata), a graph shaped by the
// model's own layers and heads, and weights byte-identical to the model's. Refusals are
// InvalidArgument statuses that say why.
#include "trainer/eval/onnx_export.h"

#include <gtest/gtest.h>
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <cstring>
#include <limits>
#include <map>
#include <ostream>

#include "base/status_test_util.h"
#include "trainer/eval/onnx_test_util.h"

namespace reid::trainer {
namespace {

using testing::TinyModel;
using testing::TinySpec;

onnx::ModelProto Parse(const std::string& bytes) {
  onnx::ModelProto m;
  CHECK(m.ParseFromString(bytes)) << "the exported bytes do not parse as a ModelProto";
  return m;
}

std::map<std::string, std::string> Metadata(const onnx::ModelProto& m) {
  std::map<std::string, std::string> out;
  for (const auto& e : m.metadata_props()) out[e.key()] = e.value();
  return out;
}

const onnx::TensorProto* Initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

int CountOps(const onnx::ModelProto& m, const std::string& type) {
  int n = 0;
  for (const auto& node : m.graph().node()) n += node.op_type() == type;
  return n;
}

// Checks the interface of an exported model of `spec`.
void ExpectInterface(const onnx::ModelProto& m, const TinySpec& spec) {
  EXPECT_EQ(m.ir_version(), kOnnxIrVersion);
  ASSERT_EQ(m.opset_import_size(), 1);
  EXPECT_EQ(m.opset_import(0).domain(), "");
  EXPECT_EQ(m.opset_import(0).version(), 17);
  EXPECT_EQ(m.producer_name(), "reid-train");
  EXPECT_EQ(m.producer_version(), "1.2.3-test");

  const onnx::GraphProto& g = m.graph();
  ASSERT_EQ(g.input_size(), spec.cameras > 0 ? 2 : 1);
  const auto& images = g.input(0);
  EXPECT_EQ(images.name(), "images");
  EXPECT_EQ(images.type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  const auto& ishape = images.type().tensor_type().shape();
  ASSERT_EQ(ishape.dim_size(), 4);
  EXPECT_EQ(ishape.dim(0).dim_param(), "N");
  EXPECT_FALSE(ishape.dim(0).has_dim_value());
  EXPECT_EQ(ishape.dim(1).dim_value(), 3);
  EXPECT_EQ(ishape.dim(2).dim_value(), spec.height);
  EXPECT_EQ(ishape.dim(3).dim_value(), spec.width);
  if (spec.cameras > 0) {
    const auto& cams = g.input(1);
    EXPECT_EQ(cams.name(), "camids");
    EXPECT_EQ(cams.type().tensor_type().elem_type(), onnx::TensorProto::INT64);
    ASSERT_EQ(cams.type().tensor_type().shape().dim_size(), 1);
    EXPECT_EQ(cams.type().tensor_type().shape().dim(0).dim_param(), "N");
  }
  ASSERT_EQ(g.output_size(), 1);
  EXPECT_EQ(g.output(0).name(), "features");
  EXPECT_EQ(g.output(0).type().tensor_type().elem_type(), onnx::TensorProto::FLOAT);
  const auto& oshape = g.output(0).type().tensor_type().shape();
  ASSERT_EQ(oshape.dim_size(), 2);
  EXPECT_EQ(oshape.dim(0).dim_param(), "N");
  EXPECT_EQ(oshape.dim(1).dim_value(), 64 + 32);

  auto md = Metadata(m);
  EXPECT_EQ(md["mean"], "0.48145466,0.4578275,0.40821073");
  EXPECT_EQ(md["std"], "0.5,0.5,0.5");
  EXPECT_EQ(md["input_height"], std::to_string(spec.height));
  EXPECT_EQ(md["input_width"], std::to_string(spec.width));
  EXPECT_EQ(md["neck_feat"], spec.neck_after ? "after" : "before");
  EXPECT_EQ(md["feature_dim"], "96");
  EXPECT_EQ(md["source_checkpoint"], "runs/x/checkpoints/step-100");
  EXPECT_EQ(md["producer"], "reid-train 1.2.3-test");
  if (spec.cameras > 0) {
    EXPECT_EQ(md["num_cameras"], std::to_string(spec.cameras));
  } else {
    EXPECT_EQ(md.count("num_cameras"), 0u);
  }

  // Standard operators only, with BatchNormalization exactly when the neck is after.
  const std::string allowed =
      " Conv Reshape Transpose Shape Concat Expand Add Mul MatMul Softmax Sigmoid Gather Unsqueeze"
      " LayerNormalization BatchNormalization ";
  for (const auto& node : g.node()) {
    EXPECT_NE(allowed.find(" " + node.op_type() + " "), std::string::npos) << node.op_type();
    EXPECT_EQ(node.domain(), "");
  }
  EXPECT_EQ(CountOps(m, "BatchNormalization"), spec.neck_after ? 2 : 0);
  // ln_pre, ln_1 and ln_2 per block, ln_post; one softmax per block.
  EXPECT_EQ(CountOps(m, "LayerNormalization"), 2 * spec.layers + 2);
  EXPECT_EQ(CountOps(m, "Softmax"), spec.layers);
}

OnnxExportInfo Info(const TinySpec& spec) {
  OnnxExportInfo info;
  info.mean = {0.48145466, 0.4578275, 0.40821073};
  info.std = {0.5, 0.5, 0.5};
  info.height = spec.height;
  info.width = spec.width;
  info.neck = spec.neck_after ? "after" : "before";
  info.source_checkpoint = "runs/x/checkpoints/step-100";
  info.producer_version = "1.2.3-test";
  return info;
}

struct Case {
  const char* name;
  TinySpec spec;
};

// The case's name in test listings (ctest's test names), not its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class OnnxExportTest : public ::testing::TestWithParam<Case> {};

TEST_P(OnnxExportTest, PassesCheckerAndHasTheInterface) {
  const TinySpec spec = GetParam().spec;
  InferenceModel model = TinyModel(spec);
  StatusOr<std::string> bytes = ExportOnnx(model, Info(spec));
  ASSERT_OK(bytes);
  onnx::ModelProto m = Parse(*bytes);
  EXPECT_NO_THROW(onnx::checker::check_model(m));
  ExpectInterface(m, spec);

  // The patch embedding's stride and the heads come from the model.
  for (const auto& node : m.graph().node()) {
    if (node.op_type() != "Conv") continue;
    for (const auto& a : node.attribute()) {
      if (a.name() == "strides") {
        ASSERT_EQ(a.ints_size(), 2);
        EXPECT_EQ(a.ints(0), spec.stride);
        EXPECT_EQ(a.ints(1), spec.stride);
      }
    }
  }
  const onnx::TensorProto* heads_shape = Initializer(m, "/blocks.0/attn/qkv_shape");
  ASSERT_NE(heads_shape, nullptr);
  ASSERT_EQ(heads_shape->int64_data_size(), 5);
  EXPECT_EQ(heads_shape->int64_data(3), spec.heads);
  EXPECT_EQ(heads_shape->int64_data(4), 64 / spec.heads);

  // Weights are fp32 raw data, byte-identical to the model's (little-endian host here).
  const onnx::TensorProto* conv = Initializer(m, "image_encoder.conv1.weight");
  ASSERT_NE(conv, nullptr);
  EXPECT_EQ(conv->data_type(), onnx::TensorProto::FLOAT);
  const torch::Tensor w = model->image_encoder->conv1->weight.contiguous();
  ASSERT_EQ(conv->raw_data().size(), static_cast<size_t>(w.numel()) * 4);
  EXPECT_EQ(std::memcmp(conv->raw_data().data(), w.data_ptr<float>(), conv->raw_data().size()), 0);
  const onnx::TensorProto* pos = Initializer(m, "image_encoder.positional_embedding");
  ASSERT_NE(pos, nullptr);
  ASSERT_EQ(pos->dims_size(), 2);
  EXPECT_EQ(pos->dims(0), model->image_encoder->positional_embedding.size(0));
  if (spec.cameras > 0) {
    const onnx::TensorProto* cv = Initializer(m, "cv_embed_scaled");
    ASSERT_NE(cv, nullptr);
    EXPECT_EQ(cv->dims(0), spec.cameras);
  }
  if (spec.neck_after) {
    EXPECT_NE(Initializer(m, "bottleneck.running_var"), nullptr);
  } else {
    EXPECT_EQ(Initializer(m, "bottleneck.running_var"), nullptr);  // unused: not exported
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, OnnxExportTest,
    ::testing::Values(Case{"Before", {128, 64, 16, 2, 2, false, 0}},
                      Case{"AfterOverlapping", {128, 64, 12, 2, 2, true, 0}},
                      Case{"BeforeSie", {128, 64, 16, 2, 2, false, 5}},
                      Case{"AfterOverlappingSie", {128, 64, 12, 2, 2, true, 4}},
                      Case{"ThreeLayersFourHeads", {96, 48, 16, 3, 4, true, 0}}),
    [](const ::testing::TestParamInfo<Case>& p) { return std::string(p.param.name); });

TEST(OnnxExportErrorTest, RefusesNonFloatModel) {
  TinySpec spec;
  InferenceModel model = TinyModel(spec);
  model->to(torch::kDouble);
  StatusOr<std::string> bytes = ExportOnnx(model, Info(spec));
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bytes.status().message().find("needs an fp32 model"), std::string::npos)
      << bytes.status().message();
  EXPECT_NE(bytes.status().message().find("Double"), std::string::npos) << bytes.status().message();
}

TEST(OnnxExportErrorTest, RefusesInputSizeOfAnotherGrid) {
  TinySpec spec;
  InferenceModel model = TinyModel(spec);
  OnnxExportInfo info = Info(spec);
  info.height = 256;
  StatusOr<std::string> bytes = ExportOnnx(model, info);
  ASSERT_FALSE(bytes.ok());
  EXPECT_EQ(bytes.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(bytes.status().message().find("gives a 16x4 patch grid"), std::string::npos)
      << bytes.status().message();
}

TEST(OnnxExportErrorTest, RefusesNeckThatContradictsTheModel) {
  TinySpec spec;
  InferenceModel model = TinyModel(spec);
  OnnxExportInfo info = Info(spec);
  info.neck = "after";
  StatusOr<std::string> bytes = ExportOnnx(model, info);
  ASSERT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message().find("neck 'after' but the model's is 'before'"),
            std::string::npos)
      << bytes.status().message();
}

TEST(OnnxExportErrorTest, RefusesNonFiniteWeights) {
  TinySpec spec;
  InferenceModel model = TinyModel(spec);
  {
    torch::NoGradGuard no_grad;
    model->image_encoder->proj[0][0] = std::numeric_limits<float>::quiet_NaN();
  }
  StatusOr<std::string> bytes = ExportOnnx(model, Info(spec));
  ASSERT_FALSE(bytes.ok());
  EXPECT_NE(bytes.status().message().find("image_encoder.proj has non-finite values"),
            std::string::npos)
      << bytes.status().message();
}

}  // namespace
}  // namespace reid::trainer
