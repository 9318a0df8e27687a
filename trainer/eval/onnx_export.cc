// InferenceModel -> ONNX ModelProto. The graph follows clip.cc's VisionTransformer and the
// inference model's neck operation by operation (same order, same fp32 arithmetic), so that a
// runtime's output matches LibTorch's to float rounding.
#include "trainer/eval/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <set>
#include <utility>
#include <variant>
#include <vector>

namespace reid::trainer {
namespace {

// A number in its shortest round-trip decimal form ("0.5", "0.48145466").
std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

std::string JoinDoubles(const std::array<double, 3>& v) {
  return FormatDouble(v[0]) + "," + FormatDouble(v[1]) + "," + FormatDouble(v[2]);
}

// The tensor's values as ONNX raw_data: fp32, little-endian whatever the host's byte order.
std::string RawLittleEndianFloats(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t n = c.numel();
  std::string raw(static_cast<size_t>(n) * 4, '\0');
  const float* src = c.data_ptr<float>();
  const uint32_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  if (first == 1) {  // little-endian host: the bytes as they are
    std::memcpy(raw.data(), src, raw.size());
    return raw;
  }
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = 0;
    std::memcpy(&u, src + i, 4);
    for (int b = 0; b < 4; ++b) raw[4 * i + b] = static_cast<char>((u >> (8 * b)) & 0xff);
  }
  return raw;
}

onnx::AttributeProto IntAttr(const std::string& name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a.add_ints(x);
  return a;
}

onnx::AttributeProto FloatAttr(const std::string& name, double v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(static_cast<float>(v));
  return a;
}

// Appends nodes and initializers to a graph; every value name is checked to be new (SSA).
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* graph) : graph_(graph) {}

  // Node `type`(inputs) -> `output` (also the node's name); returns `output`.
  std::string Op(const std::string& type, const std::vector<std::string>& inputs,
                 const std::string& output, std::vector<onnx::AttributeProto> attrs = {}) {
    Claim(output);
    onnx::NodeProto* node = graph_->add_node();
    node->set_op_type(type);
    node->set_name(output);
    for (const std::string& in : inputs) node->add_input(in);
    node->add_output(output);
    for (onnx::AttributeProto& a : attrs) *node->add_attribute() = std::move(a);
    return output;
  }

  // An fp32 initializer with the tensor's shape and values.
  std::string Weight(const std::string& name, const torch::Tensor& t) {
    Claim(name);
    onnx::TensorProto* p = graph_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : t.sizes()) p->add_dims(d);
    p->set_raw_data(RawLittleEndianFloats(t));
    return name;
  }

  // An fp32 scalar (0-d) initializer.
  std::string Scalar(const std::string& name, double v) {
    return Weight(name, torch::tensor(static_cast<float>(v)).reshape({}));
  }

  // An int64 initializer: a 1-d vector, or a 0-d scalar when `scalar` (one value).
  std::string Ints(const std::string& name, const std::vector<int64_t>& v, bool scalar = false) {
    CHECK(!scalar || v.size() == 1);
    Claim(name);
    onnx::TensorProto* p = graph_->add_initializer();
    p->set_name(name);
    p->set_data_type(onnx::TensorProto::INT64);
    if (!scalar) p->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) p->add_int64_data(x);
    return name;
  }

  // A graph input or output: element type and dims, a dim < 0 being the symbolic "N".
  static void Declare(onnx::ValueInfoProto* vi, const std::string& name, int32_t elem_type,
                      const std::vector<int64_t>& dims) {
    vi->set_name(name);
    onnx::TypeProto_Tensor* tt = vi->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(elem_type);
    for (int64_t d : dims) {
      onnx::TensorShapeProto_Dimension* dim = tt->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("N");
      } else {
        dim->set_dim_value(d);
      }
    }
  }
  void Input(const std::string& name, int32_t elem_type, const std::vector<int64_t>& dims) {
    Claim(name);
    Declare(graph_->add_input(), name, elem_type, dims);
  }
  // Declares an existing value as a graph output.
  void Output(const std::string& name, int32_t elem_type, const std::vector<int64_t>& dims) {
    CHECK(names_.count(name)) << "ONNX output of no node: " << name;
    Declare(graph_->add_output(), name, elem_type, dims);
  }

 private:
  void Claim(const std::string& name) {
    CHECK(names_.insert(name).second) << "ONNX value name used twice: " << name;
  }
  onnx::GraphProto* graph_;
  std::set<std::string> names_;
};

// Every floating parameter and buffer of the model must be fp32 (the graph's type) and finite.
Status CheckTensors(InferenceModelImpl& m) {
  std::vector<std::pair<std::string, torch::Tensor>> all;
  for (const auto& p : m.named_parameters(/*recurse=*/true)) all.emplace_back(p.key(), p.value());
  for (const auto& b : m.named_buffers(/*recurse=*/true)) all.emplace_back(b.key(), b.value());
  if (m.cv_embed.defined()) all.emplace_back("cv_embed", m.cv_embed);
  for (const auto& [name, t] : all) {
    if (!t.defined() || !t.is_floating_point()) continue;  // num_batches_tracked
    if (t.scalar_type() != torch::kFloat) {
      return Status::InvalidArgument("ONNX export needs an fp32 model; " + name + " is " +
                                     std::string(c10::toString(t.scalar_type())));
    }
    if (!torch::isfinite(t.detach()).all().item<bool>()) {
      return Status::InvalidArgument("ONNX export: " + name + " has non-finite values");
    }
  }
  return Status::Ok();
}

// The affine parameters of a LayerNorm (ones / zeros when it has none).
std::pair<torch::Tensor, torch::Tensor> LayerNormAffine(torch::nn::LayerNorm& ln, int64_t width) {
  torch::Tensor w = ln->weight.defined() ? ln->weight : torch::ones({width});
  torch::Tensor b = ln->bias.defined() ? ln->bias : torch::zeros({width});
  return {w, b};
}

// Emits graph nodes for the model's modules.
class Exporter {
 public:
  Exporter(InferenceModelImpl& m, onnx::GraphProto* graph) : m_(m), g_(graph) {}

  // LayerNormalization over the last axis with `ln`'s eps and affine parameters (named `prefix`).
  std::string LayerNorm(torch::nn::LayerNorm& ln, const std::string& prefix, int64_t width,
                        const std::string& x, const std::string& out) {
    auto [w, b] = LayerNormAffine(ln, width);
    const std::string wn = g_.Weight(prefix + ".weight", w);
    const std::string bn = g_.Weight(prefix + ".bias", b);
    return g_.Op("LayerNormalization", {x, wn, bn}, out,
                 {IntAttr("axis", -1), FloatAttr("epsilon", ln->options.eps())});
  }

  // x @ weight^T + bias for a Linear-style (out, in) weight; x of any rank >= 2.
  std::string Linear(const torch::Tensor& weight, const torch::Tensor& bias,
                     const std::string& prefix, const std::string& x, const std::string& out) {
    const std::string wt = g_.Weight(prefix + ".weight_t", weight.t());
    if (!bias.defined()) return g_.Op("MatMul", {x, wt}, out);
    const std::string mm = g_.Op("MatMul", {x, wt}, out + "/matmul");
    return g_.Op("Add", {mm, g_.Weight(prefix + ".bias", bias)}, out);
  }

  // Eval-mode BatchNorm1d on (N, C) with the running statistics.
  StatusOr<std::string> BatchNorm(torch::nn::BatchNorm1d& bn, const std::string& prefix,
                                  int64_t channels, const std::string& x) {
    if (!bn->running_mean.defined() || !bn->running_var.defined()) {
      return Status::InvalidArgument("ONNX export: " + prefix +
                                     " has no running statistics (track_running_stats off)");
    }
    if (bn->running_mean.numel() != channels) {
      return Status::InvalidArgument("ONNX export: " + prefix + " has " +
                                     std::to_string(bn->running_mean.numel()) +
                                     " channels, the feature " + std::to_string(channels));
    }
    torch::Tensor w = bn->weight.defined() ? bn->weight : torch::ones({channels});
    torch::Tensor b = bn->bias.defined() ? bn->bias : torch::zeros({channels});
    return g_.Op("BatchNormalization",
                 {x, g_.Weight(prefix + ".weight", w), g_.Weight(prefix + ".bias", b),
                  g_.Weight(prefix + ".running_mean", bn->running_mean),
                  g_.Weight(prefix + ".running_var", bn->running_var)},
                 prefix + "/out", {FloatAttr("epsilon", bn->options.eps())});
  }

  // One pre-LN residual block (clip.cc's ResidualAttentionBlock, batch-first): x (N, L, W).
  Status Block(int64_t i, int64_t width, int64_t heads, std::string* x) {
    auto blk = m_.image_encoder->transformer->resblocks->ptr<model::ResidualAttentionBlockImpl>(i);
    const std::string p = "image_encoder.transformer.resblocks." + std::to_string(i);
    const std::string v = "/blocks." + std::to_string(i);
    model::MultiheadAttentionImpl& attn = *blk->attn;
    if (attn.in_proj_weight.sizes() != torch::IntArrayRef({3 * width, width}) ||
        attn.out_proj->weight.sizes() != torch::IntArrayRef({width, width})) {
      return Status::InvalidArgument("ONNX export: " + p + ".attn has in_proj_weight " +
                                     c10::str(attn.in_proj_weight.sizes()) + " for width " +
                                     std::to_string(width));
    }
    const int64_t hd = width / heads;
    // qkv = ln_1(x) @ in_proj_weight^T + in_proj_bias: (N, L, 3W) -> (3, N, heads, L, hd)
    std::string h = LayerNorm(blk->ln_1, p + ".ln_1", width, *x, v + "/ln_1");
    std::string qkv =
        Linear(attn.in_proj_weight, attn.in_proj_bias, p + ".attn.in_proj", h, v + "/attn/qkv");
    qkv = g_.Op("Reshape", {qkv, g_.Ints(v + "/attn/qkv_shape", {0, 0, 3, heads, hd})},
                v + "/attn/qkv_heads");
    qkv = g_.Op("Transpose", {qkv}, v + "/attn/qkv_t", {IntsAttr("perm", {2, 0, 3, 1, 4})});
    std::string q = g_.Op("Gather", {qkv, g_.Ints(v + "/attn/i0", {0}, true)}, v + "/attn/q",
                          {IntAttr("axis", 0)});
    std::string k = g_.Op("Gather", {qkv, g_.Ints(v + "/attn/i1", {1}, true)}, v + "/attn/k",
                          {IntAttr("axis", 0)});
    std::string val = g_.Op("Gather", {qkv, g_.Ints(v + "/attn/i2", {2}, true)}, v + "/attn/v",
                            {IntAttr("axis", 0)});
    // softmax(q / sqrt(hd) @ k^T) @ v, as LibTorch 1.13's path in clip.cc (scale q first).
    q = g_.Op("Mul", {q, g_.Scalar(v + "/attn/scale", 1.0 / std::sqrt(static_cast<double>(hd)))},
              v + "/attn/q_scaled");
    k = g_.Op("Transpose", {k}, v + "/attn/k_t", {IntsAttr("perm", {0, 1, 3, 2})});
    std::string s = g_.Op("MatMul", {q, k}, v + "/attn/scores");  // (N, heads, L, L)
    s = g_.Op("Softmax", {s}, v + "/attn/probs", {IntAttr("axis", -1)});
    std::string o = g_.Op("MatMul", {s, val}, v + "/attn/context");  // (N, heads, L, hd)
    o = g_.Op("Transpose", {o}, v + "/attn/context_t", {IntsAttr("perm", {0, 2, 1, 3})});
    o = g_.Op("Reshape", {o, g_.Ints(v + "/attn/merge_shape", {0, 0, width})}, v + "/attn/merged");
    o = Linear(attn.out_proj->weight, attn.out_proj->bias, p + ".attn.out_proj", o,
               v + "/attn/out");
    *x = g_.Op("Add", {*x, o}, v + "/attn_residual");
    // x + c_proj(QuickGELU(c_fc(ln_2(x)))), QuickGELU(u) = u * sigmoid(1.702 u)
    model::MlpImpl& mlp = *blk->mlp;
    h = LayerNorm(blk->ln_2, p + ".ln_2", width, *x, v + "/ln_2");
    std::string u = Linear(mlp.c_fc->weight, mlp.c_fc->bias, p + ".mlp.c_fc", h, v + "/mlp/fc");
    std::string a = g_.Op("Mul", {u, g_.Scalar(v + "/mlp/gelu_coef", 1.702)}, v + "/mlp/scaled");
    a = g_.Op("Sigmoid", {a}, v + "/mlp/sigmoid");
    a = g_.Op("Mul", {u, a}, v + "/mlp/gelu");
    a = Linear(mlp.c_proj->weight, mlp.c_proj->bias, p + ".mlp.c_proj", a, v + "/mlp/out");
    *x = g_.Op("Add", {*x, a}, v + "/mlp_residual");
    return Status::Ok();
  }

  // The whole graph; `info` checked by the caller.
  Status Build(const OnnxExportInfo& info) {
    model::VisionTransformerImpl& enc = *m_.image_encoder;
    const torch::Tensor& conv_w = enc.conv1->weight;  // (W, 3, kh, kw)
    if (conv_w.dim() != 4 || conv_w.size(1) != 3) {
      return Status::InvalidArgument("ONNX export: conv1.weight is " + c10::str(conv_w.sizes()) +
                                     ", expected (W, 3, kh, kw)");
    }
    const int64_t width = conv_w.size(0), kh = conv_w.size(2), kw = conv_w.size(3);
    const auto& copt = enc.conv1->options;
    const int64_t sh = (*copt.stride())[0], sw = (*copt.stride())[1];
    // The padding is a variant (c10's in LibTorch 1.x, std's in 2.x): found through ADL.
    using std::get_if;
    const auto* pad = get_if<torch::ExpandingArray<2>>(&copt.padding());
    if (pad == nullptr || (**pad)[0] != 0 || (**pad)[1] != 0 || (*copt.dilation())[0] != 1 ||
        (*copt.dilation())[1] != 1 || copt.groups() != 1) {
      return Status::InvalidArgument(
          "ONNX export: conv1 must be an unpadded, undilated, ungrouped patch embedding");
    }
    if (info.height < kh || info.width < kw) {
      return Status::InvalidArgument("ONNX export: input " + std::to_string(info.height) + "x" +
                                     std::to_string(info.width) + " is smaller than the patch");
    }
    const int64_t gh = (info.height - kh) / sh + 1, gw = (info.width - kw) / sw + 1;
    const int64_t tokens = 1 + gh * gw;
    if (enc.positional_embedding.sizes() != torch::IntArrayRef({tokens, width})) {
      return Status::InvalidArgument(
          "ONNX export: input " + std::to_string(info.height) + "x" + std::to_string(info.width) +
          " gives a " + std::to_string(gh) + "x" + std::to_string(gw) +
          " patch grid but the positional embedding is " +
          c10::str(enc.positional_embedding.sizes()) + " (grid " +
          std::to_string(enc.shape().grid_h) + "x" + std::to_string(enc.shape().grid_w) + ")");
    }
    // Heads: not stored in a tensor; the encoder's shape (MultiheadAttention keeps its own copy
    // private).
    const int64_t heads = enc.shape().heads;
    if (heads <= 0 || width % heads != 0) {
      return Status::InvalidArgument("ONNX export: width " + std::to_string(width) +
                                     " is not divisible by heads " + std::to_string(heads));
    }
    if (enc.class_embedding.numel() != width || enc.proj.dim() != 2 || enc.proj.size(0) != width) {
      return Status::InvalidArgument("ONNX export: class_embedding / proj do not match width " +
                                     std::to_string(width));
    }
    const int64_t out_dim = enc.proj.size(1);
    const bool sie = m_.cv_embed.defined();

    // Inputs.
    g_.Input("images", onnx::TensorProto::FLOAT, {-1, 3, info.height, info.width});
    if (sie) g_.Input("camids", onnx::TensorProto::INT64, {-1});

    // Patch embedding: Conv -> (N, W, gh, gw) -> (N, gh*gw, W).
    std::vector<std::string> conv_in = {"images", g_.Weight("image_encoder.conv1.weight", conv_w)};
    if (enc.conv1->bias.defined()) {
      conv_in.push_back(g_.Weight("image_encoder.conv1.bias", enc.conv1->bias));
    }
    std::string t =
        g_.Op("Conv", conv_in, "/patch_embed/conv",
              {IntsAttr("kernel_shape", {kh, kw}), IntsAttr("strides", {sh, sw}),
               IntsAttr("pads", {0, 0, 0, 0}), IntsAttr("dilations", {1, 1}), IntAttr("group", 1)});
    t = g_.Op("Reshape", {t, g_.Ints("/patch_embed/flat_shape", {0, width, gh * gw})},
              "/patch_embed/flat");
    t = g_.Op("Transpose", {t}, "/patch_embed/tokens", {IntsAttr("perm", {0, 2, 1})});

    // Class token (1, 1, W), with SIE plus sie_coe * cv_embed[camids] (CLS only), else expanded
    // to (N, 1, W) from the batch size of `images`.
    const std::string cls_emb =
        g_.Weight("image_encoder.class_embedding", enc.class_embedding.reshape({1, 1, width}));
    std::string cls;
    if (sie) {
      if (m_.cv_embed.dim() != 2 || m_.cv_embed.size(1) != width) {
        return Status::InvalidArgument("ONNX export: cv_embed is " + c10::str(m_.cv_embed.sizes()) +
                                       ", expected (cameras, " + std::to_string(width) + ")");
      }
      // sie_coe folded into the table: the same fp32 product the model computes per row.
      const torch::Tensor scaled = m_.sie_coe() * m_.cv_embed.detach().to(torch::kCPU);
      std::string cv = g_.Op("Gather", {g_.Weight("cv_embed_scaled", scaled), "camids"},
                             "/sie/rows", {IntAttr("axis", 0)});
      cv = g_.Op("Unsqueeze", {cv, g_.Ints("/sie/axis1", {1})}, "/sie/rows3");
      cls = g_.Op("Add", {cls_emb, cv}, "/cls_token");
    } else {
      std::string n =
          g_.Op("Shape", {"images"}, "/batch", {IntAttr("start", 0), IntAttr("end", 1)});
      n = g_.Op("Concat", {n, g_.Ints("/cls_tail", {1, width})}, "/cls_shape",
                {IntAttr("axis", 0)});
      cls = g_.Op("Expand", {cls_emb, n}, "/cls_token");
    }
    t = g_.Op("Concat", {cls, t}, "/tokens", {IntAttr("axis", 1)});  // (N, L, W)
    t = g_.Op("Add", {t, g_.Weight("image_encoder.positional_embedding", enc.positional_embedding)},
              "/tokens_pos");
    t = LayerNorm(enc.ln_pre, "image_encoder.ln_pre", width, t, "/ln_pre");

    const int64_t layers = enc.transformer->layers();
    if (layers < 1) return Status::InvalidArgument("ONNX export: the transformer has no blocks");
    for (int64_t i = 0; i < layers; ++i) REID_RETURN_IF_ERROR(Block(i, width, heads, &t));

    // CLS row -> ln_post -> cls (N, W); cls @ proj -> cls_proj (N, D).
    t = g_.Op("Gather", {t, g_.Ints("/cls_index", {0}, true)}, "/cls_out", {IntAttr("axis", 1)});
    std::string feat = LayerNorm(enc.ln_post, "image_encoder.ln_post", width, t, "/cls");
    std::string feat_proj =
        g_.Op("MatMul", {feat, g_.Weight("image_encoder.proj", enc.proj)}, "/cls_proj");
    if (m_.neck_after()) {
      REID_ASSIGN_OR_RETURN(feat, BatchNorm(m_.bottleneck, "bottleneck", width, feat));
      REID_ASSIGN_OR_RETURN(feat_proj,
                            BatchNorm(m_.bottleneck_proj, "bottleneck_proj", out_dim, feat_proj));
    }
    g_.Op("Concat", {feat, feat_proj}, "features", {IntAttr("axis", 1)});
    g_.Output("features", onnx::TensorProto::FLOAT, {-1, width + out_dim});
    feature_dim_ = width + out_dim;
    return Status::Ok();
  }

  int64_t feature_dim() const { return feature_dim_; }

 private:
  InferenceModelImpl& m_;
  GraphBuilder g_;
  int64_t feature_dim_ = 0;
};

void AddMetadata(onnx::ModelProto* model, const std::string& key, const std::string& value) {
  onnx::StringStringEntryProto* e = model->add_metadata_props();
  e->set_key(key);
  e->set_value(value);
}

}  // namespace

StatusOr<std::string> ExportOnnx(InferenceModel& model, const OnnxExportInfo& info) {
  if (!model || !model->image_encoder) {
    return Status::InvalidArgument("ONNX export: no model");
  }
  InferenceModelImpl& m = *model;
  const std::string model_neck = m.neck_after() ? "after" : "before";
  if (!info.neck.empty() && info.neck != model_neck) {
    return Status::InvalidArgument("ONNX export: neck '" + info.neck + "' but the model's is '" +
                                   model_neck + "'");
  }
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(info.mean[c]) || !std::isfinite(info.std[c]) || !(info.std[c] > 0)) {
      return Status::InvalidArgument("ONNX export: mean/std must be finite and std > 0");
    }
  }
  REID_RETURN_IF_ERROR(CheckTensors(m));

  torch::NoGradGuard no_grad;
  onnx::ModelProto proto;
  proto.set_ir_version(kOnnxIrVersion);
  proto.set_producer_name("reid-train");
  proto.set_producer_version(info.producer_version);
  proto.set_doc_string(
      "CLIP-ReID inference model: features (N, W + D) = concat(cls, cls_proj) " + model_neck +
      " the BN necks, not L2-normalised, from images (N, 3, H, W) normalised with mean/std.");
  onnx::OperatorSetIdProto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);
  onnx::GraphProto* graph = proto.mutable_graph();
  graph->set_name("reid_inference");

  Exporter exporter(m, graph);
  REID_RETURN_IF_ERROR(exporter.Build(info));

  AddMetadata(&proto, "mean", JoinDoubles(info.mean));
  AddMetadata(&proto, "std", JoinDoubles(info.std));
  AddMetadata(&proto, "input_height", std::to_string(info.height));
  AddMetadata(&proto, "input_width", std::to_string(info.width));
  AddMetadata(&proto, "neck_feat", model_neck);
  AddMetadata(&proto, "feature_dim", std::to_string(exporter.feature_dim()));
  if (m.cv_embed.defined()) AddMetadata(&proto, "num_cameras", std::to_string(m.num_cameras()));
  AddMetadata(&proto, "source_checkpoint", info.source_checkpoint);
  AddMetadata(&proto, "producer",
              "reid-train" + (info.producer_version.empty() ? "" : " " + info.producer_version));

  // protobuf cannot serialize a message of 2 GiB or more (ONNX's external-data format would be
  // needed; ViT-L/14 is about 1.2 GB).
  const size_t bytes = proto.ByteSizeLong();
  if (bytes >= static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("ONNX export: the model is " + std::to_string(bytes) +
                                   " bytes, over protobuf's 2 GiB limit");
  }
  // ONNX's checker (structure, types, operator schemas) and strict shape inference (every
  // node's shapes consistent); the inferred output must be (N, W + D).
  try {
    onnx::checker::check_model(proto);
    onnx::ModelProto inferred;
    *inferred.mutable_graph()->mutable_output() = graph->output();
    inferred.set_ir_version(proto.ir_version());
    *inferred.mutable_opset_import() = proto.opset_import();
    // Shape inference over a weightless copy: initializers keep their dims only.
    onnx::GraphProto* ig = inferred.mutable_graph();
    *ig->mutable_input() = graph->input();
    *ig->mutable_node() = graph->node();
    for (const onnx::TensorProto& init : graph->initializer()) {
      if (init.data_type() == onnx::TensorProto::INT64) {
        *ig->add_initializer() = init;  // shapes for Reshape come from these values
      } else {
        onnx::ValueInfoProto* vi = ig->add_input();
        std::vector<int64_t> dims(init.dims().begin(), init.dims().end());
        GraphBuilder::Declare(vi, init.name(), init.data_type(), dims);
      }
    }
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true,
                                                                   /*strict_mode=*/1,
                                                                   /*data_prop=*/true));
    const onnx::TensorShapeProto& out = ig->output(0).type().tensor_type().shape();
    if (out.dim_size() != 2 || out.dim(0).dim_param() != "N" ||
        out.dim(1).dim_value() != exporter.feature_dim()) {
      return Status::Internal("ONNX export: shape inference gives features " +
                              out.ShortDebugString() + ", expected (N, " +
                              std::to_string(exporter.feature_dim()) + ")");
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("ONNX export: the ONNX checker rejects the model: ") +
                            e.what());
  }
  std::string bytes_out;
  if (!proto.SerializeToString(&bytes_out)) {
    return Status::Internal("ONNX export: serializing the ModelProto failed");
  }
  return bytes_out;
}

}  // namespace reid::trainer
