// Config loading (defaults -> file -> overrides) and validation that lists every problem.
#include "proto/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include "base/file_util.h"

namespace reid::config {
namespace {

// Bounds on what a config may ask for: far above any real run, low enough that no arithmetic on
// them overflows and no allocation from them is absurd.
constexpr int64_t kMaxImageSide = 4096;
constexpr int64_t kMaxWidth = 16384;
constexpr int64_t kMaxLayers = 256;
constexpr int64_t kMaxBatch = 1 << 20;
constexpr int64_t kMaxEpochs = 100000;
constexpr size_t kMaxProblems = 50;
// Every float and double: finite, and no larger than this in magnitude (the largest real value,
// dist.timeout_s, is at most 1e7). Fields with a meaning get tighter ranges below.
constexpr double kMaxFloatMagnitude = 1e9;
// Learning rates (1/step): SGD on a ViT runs at 1e-2 at most; 10 leaves room and refuses 1e300.
constexpr double kMaxLearningRate = 10;
constexpr size_t kMaxEchoedChars = 120;
constexpr uint64_t kMaxConfigBytes = uint64_t{16} << 20;

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// Collects parser errors with the file name, position and the offending source line.
class ProblemCollector : public google::protobuf::io::ErrorCollector {
 public:
  ProblemCollector(const std::string& source, const std::string& text, Problems* problems)
      : source_(source), problems_(problems) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines_.push_back(line);
  }
  void AddError(int line, int column, const std::string& message) override {
    problems_->push_back(Format(line, column, message));
  }
  // A warning does not make the config unusable: it is printed, not counted as a problem.
  void AddWarning(int line, int column, const std::string& message) override {
    std::cerr << Format(line, column, "warning: " + message) << "\n";
  }

 private:
  // "SOURCE:LINE:COL: message (in: the source line)".
  std::string Format(int line, int column, const std::string& message) const {
    std::ostringstream out;
    out << source_ << ":" << line + 1 << ":" << column + 1 << ": "
        << (message.size() > 2 * kMaxEchoedChars ? message.substr(0, 2 * kMaxEchoedChars) + "..."
                                                 : message);
    if (line >= 0 && line < static_cast<int>(lines_.size())) {
      std::string src = lines_[line];
      src.erase(0, src.find_first_not_of(" \t"));
      if (src.size() > kMaxEchoedChars) src = src.substr(0, kMaxEchoedChars) + "...";
      if (!src.empty()) out << " (in: " << src << ")";
    }
    return out.str();
  }
  std::string source_;
  std::vector<std::string> lines_;
  Problems* problems_;
};

// Clears in `dst` every repeated field that `src` sets, recursing into set sub-messages.
void ClearRepeatedSetIn(const Message& src, Message* dst) {
  std::vector<const FieldDescriptor*> fields;
  src.GetReflection()->ListFields(src, &fields);
  const Reflection* dst_refl = dst->GetReflection();
  for (const FieldDescriptor* f : fields) {
    if (f->is_repeated()) {
      dst_refl->ClearField(dst, f);
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      ClearRepeatedSetIn(src.GetReflection()->GetMessage(src, f), dst_refl->MutableMessage(dst, f));
    }
  }
}

// Appends "path = value: why" problems; `path` is the dotted field path.
class Checker {
 public:
  explicit Checker(Problems* problems) : problems_(problems) {}
  template <typename T>
  void Require(bool ok, const std::string& path, T value, const std::string& why) {
    if (ok) return;
    std::ostringstream out;
    out << path << " = " << value << ": " << why;
    problems_->push_back(out.str());
  }
  void Positive(double v, const std::string& path) { Require(v > 0, path, v, "must be > 0"); }
  void NonNegative(double v, const std::string& path) { Require(v >= 0, path, v, "must be >= 0"); }
  void Probability(double v, const std::string& path) {
    Require(v >= 0 && v <= 1, path, v, "must be in [0, 1]");
  }
  // lo < v <= hi (open_low) or lo <= v <= hi, for the floats whose absurd values validated before
  // and then failed the run (a learning rate of 1e300 overflowed the optimiser).
  void InRangeF(double v, double lo, double hi, bool open_low, const std::string& path,
                const std::string& what) {
    if (!std::isfinite(v)) return;  // RequireFinite names it
    std::ostringstream range;
    range << (open_low ? "(" : "[") << lo << ", " << hi << "]";
    Require((open_low ? v > lo : v >= lo) && v <= hi, path, v,
            "must be in " + range.str() + (what.empty() ? "" : " (" + what + ")"));
  }
  // lo <= v <= hi, in 64 bits (callers pass sums and products of int32 fields widened first).
  void InRange(int64_t v, int64_t lo, int64_t hi, const std::string& path) {
    Require(v >= lo && v <= hi, path, v,
            "must be in " + std::to_string(lo) + ".." + std::to_string(hi));
  }

 private:
  Problems* problems_;
};

// Calls visit(value, path) for every set float and double of `msg`, singular or repeated, in
// its singular sub-messages too ("stage2.base_lr", "input.pixel_mean[1]").
void ForEachFloat(const Message& msg, const std::string& prefix,
                  const std::function<void(double, const std::string&)>& visit) {
  const Reflection* refl = msg.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(msg, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string path = prefix + f->name();
    const bool is_float = f->cpp_type() == FieldDescriptor::CPPTYPE_FLOAT;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (!f->is_repeated()) ForEachFloat(refl->GetMessage(msg, f), path + ".", visit);
      continue;
    }
    if (!is_float && f->cpp_type() != FieldDescriptor::CPPTYPE_DOUBLE) continue;
    if (!f->is_repeated()) {
      visit(is_float ? refl->GetFloat(msg, f) : refl->GetDouble(msg, f), path);
      continue;
    }
    for (int i = 0; i < refl->FieldSize(msg, f); ++i) {
      visit(is_float ? refl->GetRepeatedFloat(msg, f, i) : refl->GetRepeatedDouble(msg, f, i),
            path + "[" + std::to_string(i) + "]");
    }
  }
}

// Every float and double of the config must be finite: "inf", "nan" and 1e400 (parsed as inf)
// would pass comparisons such as "> 0" or fail them silently.
void RequireFinite(const Message& msg, Checker& c) {
  ForEachFloat(msg, "", [&c](double v, const std::string& path) {
    c.Require(std::isfinite(v), path, v, "must be a finite number");
  });
}

// Every finite float and double is at most kMaxFloatMagnitude in magnitude: a backstop for
// fields without a range of their own (every field has one now), so a field already named by a
// problem (its own range, or not finite) is not named twice.
void RequireBounded(const Message& msg, Checker& c, const Problems& named) {
  auto mentioned = [&named](const std::string& path) {
    for (const std::string& p : named) {
      if (p.rfind(path + " = ", 0) == 0) return true;
    }
    return false;
  };
  ForEachFloat(msg, "", [&](double v, const std::string& path) {
    if (std::isfinite(v) && std::fabs(v) > kMaxFloatMagnitude && !mentioned(path)) {
      c.Require(false, path, v, "must be at most 1e9 in magnitude");
    }
  });
}

// At most kMaxProblems problems are listed, then how many more there were.
void CapProblems(Problems* problems) {
  if (problems->size() <= kMaxProblems) return;
  const size_t more = problems->size() - kMaxProblems;
  problems->resize(kMaxProblems);
  problems->push_back("... and " + std::to_string(more) + " more problems");
}

void ValidateData(const proto::ReidConfig& cfg, Checker& c) {
  const auto& d = cfg.data();
  c.InRange(d.num_workers(), 1, 1024, "data.num_workers");
  c.InRange(d.prefetch_batches(), 1, 1024, "data.prefetch_batches");
  c.InRange(d.cache_budget_mb(), 0, int64_t{1} << 24, "data.cache_budget_mb");
  c.Require(d.max_unreadable_fraction() >= 0 && d.max_unreadable_fraction() < 1,
            "data.max_unreadable_fraction", d.max_unreadable_fraction(), "must be in [0, 1)");
  c.InRange(d.test_batch_size(), 1, 65536, "data.test_batch_size");
  // The one validator of the synthetic generator's values (`reid synth` flags land here too).
  const auto& s = d.synthetic();
  c.Require(s.ids() >= 2 && s.ids() <= 4999, "data.synthetic.ids", s.ids(),
            "must be in 2..4999 (train and test pids share Market-1501's 4-digit names)");
  c.Require(s.cameras() >= 2 && s.cameras() <= 9, "data.synthetic.cameras", s.cameras(),
            "must be in 2..9 (queries need a match from another camera; Market-1501 names "
            "cameras with one digit)");
  c.Require(s.images_per_id() >= 2 && s.images_per_id() <= 1000, "data.synthetic.images_per_id",
            s.images_per_id(), "must be in 2..1000");
  c.Require(s.height() >= 32 && s.height() <= 4096, "data.synthetic.height", s.height(),
            "must be in 32..4096");
  c.Require(s.width() >= 16 && s.width() <= 4096, "data.synthetic.width", s.width(),
            "must be in 16..4096");
  // Each field may be in range and the product still absurd (4999 ids x 1000 images of 4096^2).
  const int64_t images = int64_t{s.ids()} * s.images_per_id();
  c.Require(images <= 1000000, "data.synthetic.images_per_id", s.images_per_id(),
            "times data.synthetic.ids gives " + std::to_string(images) +
                " images per split; at most 1000000");
  c.Require(images * s.height() * s.width() <= (int64_t{1} << 36), "data.synthetic.height",
            s.height(), "with width and image count gives more than 2^36 pixels per split");
}

void ValidateImageSize(const proto::ImageSize& size, const std::string& path,
                       const proto::ModelConfig& m, Checker& c) {
  const int patch = m.vision_patch_size();
  c.InRange(size.height(), 1, kMaxImageSide, path + ".height");
  c.InRange(size.width(), 1, kMaxImageSide, path + ".width");
  c.Require(size.height() >= patch, path + ".height", size.height(),
            "must be >= model.vision_patch_size (" + std::to_string(patch) + ")");
  c.Require(size.width() >= patch, path + ".width", size.width(),
            "must be >= model.vision_patch_size (" + std::to_string(patch) + ")");
  // Non-overlapping patches must tile the image; with an overlapping stride CLIP-ReID floors the
  // grid ((side - patch) / stride + 1) and drops the remainder, which we accept likewise.
  if (m.stride_size() != patch || patch <= 0) return;
  c.Require(size.height() % patch == 0, path + ".height", size.height(),
            "must be a multiple of model.vision_patch_size " + std::to_string(patch));
  c.Require(size.width() % patch == 0, path + ".width", size.width(),
            "must be a multiple of model.vision_patch_size " + std::to_string(patch));
}

void ValidateInput(const proto::ReidConfig& cfg, Checker& c) {
  const auto& in = cfg.input();
  ValidateImageSize(in.size_train(), "input.size_train", cfg.model(), c);
  ValidateImageSize(in.size_test(), "input.size_test", cfg.model(), c);
  // The positional embedding is resized once, to the training grid (as CLIP-ReID does), so test
  // images must give the same patch grid (the reference's [384,128] default trap).
  const int patch = cfg.model().vision_patch_size(), stride = cfg.model().stride_size();
  if (patch > 0 && stride > 0) {
    auto grid = [&](int side) { return side < patch ? 0 : (side - patch) / stride + 1; };
    const auto& tr = in.size_train();
    const auto& te = in.size_test();
    c.Require(grid(tr.height()) == grid(te.height()) && grid(tr.width()) == grid(te.width()),
              "input.size_test", std::to_string(te.height()) + "x" + std::to_string(te.width()),
              "must give the same patch grid as input.size_train " + std::to_string(tr.height()) +
                  "x" + std::to_string(tr.width()));
  }
  c.Probability(in.flip_prob(), "input.flip_prob");
  c.Probability(in.erasing_prob(), "input.erasing_prob");
  c.InRange(in.padding(), 0, kMaxImageSide, "input.padding");
  c.Require(in.pixel_mean_size() == 3, "input.pixel_mean", in.pixel_mean_size(),
            "needs exactly 3 values (R, G, B)");
  c.Require(in.pixel_std_size() == 3, "input.pixel_std", in.pixel_std_size(),
            "needs exactly 3 values (R, G, B)");
  for (int i = 0; i < in.pixel_std_size(); ++i) {
    c.InRangeF(in.pixel_std(i), 0, 10, true, "input.pixel_std[" + std::to_string(i) + "]", "");
  }
  for (int i = 0; i < in.pixel_mean_size(); ++i) {
    c.InRangeF(in.pixel_mean(i), 0, 1, false, "input.pixel_mean[" + std::to_string(i) + "]", "");
  }
}

void ValidateModel(const proto::ReidConfig& cfg, Checker& c) {
  const auto& m = cfg.model();
  c.InRange(m.embed_dim(), 1, kMaxWidth, "model.embed_dim");
  c.InRange(m.vision_layers(), 1, kMaxLayers, "model.vision_layers");
  c.InRange(m.vision_patch_size(), 1, kMaxImageSide, "model.vision_patch_size");
  c.InRange(m.vision_width(), 1, kMaxWidth, "model.vision_width");
  c.InRange(m.transformer_width(), 1, kMaxWidth, "model.transformer_width");
  c.InRange(m.vision_heads(), 0, kMaxWidth, "model.vision_heads");
  c.Require(m.stride_size() > 0 && m.stride_size() <= m.vision_patch_size(), "model.stride_size",
            m.stride_size(), "must be in [1, vision_patch_size]");
  const int vheads = m.vision_heads() > 0 ? m.vision_heads() : m.vision_width() / 64;
  c.Require(m.vision_width() > 0 && vheads > 0 && m.vision_width() % vheads == 0,
            "model.vision_width", m.vision_width(),
            "must be a positive multiple of the head count (vision_heads, or 64 per head)");
  c.Require(m.transformer_heads() > 0 && m.transformer_width() > 0 &&
                m.transformer_width() % m.transformer_heads() == 0,
            "model.transformer_width", m.transformer_width(),
            "must be a positive multiple of model.transformer_heads");
  c.InRange(m.transformer_layers(), 1, kMaxLayers, "model.transformer_layers");
  c.Require(m.vocab_size() >= 514, "model.vocab_size", m.vocab_size(),
            "must be >= 514 (256 bytes x 2 + start + end)");
  c.InRange(m.vocab_size(), 514, 1 << 20, "model.vocab_size");
  c.InRange(m.context_length(), 3, 4096, "model.context_length");
  c.InRangeF(m.classifier_init_std(), 0, 10, true, "model.classifier_init_std", "");
  c.InRangeF(m.sie_coe(), 0, 1000, false, "model.sie_coe", "");
  c.InRange(m.pretrain_image_size(), 1, kMaxImageSide, "model.pretrain_image_size");
}

void ValidatePrompt(const proto::ReidConfig& cfg, Checker& c) {
  const auto& p = cfg.prompt();
  const std::string& t = p.template_();
  const size_t first = t.find("{ctx}");
  c.Require(first != std::string::npos, "prompt.template", "\"" + t + "\"",
            "must contain the placeholder {ctx} for the n_ctx learnable tokens");
  c.Require(first == std::string::npos || t.find("{ctx}", first + 1) == std::string::npos,
            "prompt.template", "\"" + t + "\"", "must contain {ctx} exactly once");
  c.Require(p.n_ctx() >= 1, "prompt.n_ctx", p.n_ctx(), "must be >= 1");
  c.Require(int64_t{p.n_ctx()} + 2 < cfg.model().context_length(), "prompt.n_ctx", p.n_ctx(),
            "with start and end tokens must fit model.context_length " +
                std::to_string(cfg.model().context_length()));
  c.InRangeF(p.ctx_init_std(), 0, 10, true, "prompt.ctx_init_std", "");
}

void ValidateModules(const proto::ReidConfig& cfg, Checker& c) {
  c.InRange(cfg.context_adjust().hidden_dim(), 0, kMaxWidth, "context_adjust.hidden_dim");
  const auto& a = cfg.cross_attention();
  c.InRange(a.hidden_dim(), 0, kMaxWidth, "cross_attention.hidden_dim");
  // The self-attention over each set runs at the embedding width; hidden_dim is the width of the
  // common space after W_i / W_t, which has no heads.
  const int width = cfg.model().embed_dim();
  c.Require(a.num_heads() > 0 && width > 0 && width % a.num_heads() == 0,
            "cross_attention.num_heads", a.num_heads(),
            "must divide model.embed_dim " + std::to_string(width));
}

void ValidateStage1(const proto::ReidConfig& cfg, Checker& c) {
  const auto& s = cfg.stage1();
  c.InRangeF(s.base_lr(), 0, kMaxLearningRate, true, "stage1.base_lr", "a learning rate");
  c.InRangeF(s.weight_decay(), 0, 1, false, "stage1.weight_decay", "");
  c.InRangeF(s.momentum(), 0, 1, false, "stage1.momentum", "");
  c.InRangeF(s.warmup_lr_init(), 0, kMaxLearningRate, false, "stage1.warmup_lr_init",
             "a learning rate");
  c.InRangeF(s.lr_min(), 0, kMaxLearningRate, false, "stage1.lr_min", "a learning rate");
  c.Require(s.base_lr() <= 0 || s.lr_min() <= s.base_lr(), "stage1.lr_min", s.lr_min(),
            "must be <= stage1.base_lr");
  c.InRange(s.max_epochs(), 1, kMaxEpochs, "stage1.max_epochs");
  // A warm-up or milestone past max_epochs is allowed: shortening a run with --set should not
  // force the schedule to be rewritten; it is simply never reached.
  c.NonNegative(s.warmup_epochs(), "stage1.warmup_epochs");
  c.InRange(s.ims_per_batch(), 1, kMaxBatch, "stage1.ims_per_batch");
  c.Positive(s.log_period(), "stage1.log_period");
  c.Positive(s.checkpoint_period(), "stage1.checkpoint_period");
  c.InRangeF(s.temperature(), 0, 1000, true, "stage1.temperature", "");
}

void ValidateStage2(const proto::ReidConfig& cfg, Checker& c) {
  const auto& s = cfg.stage2();
  c.InRangeF(s.base_lr(), 0, kMaxLearningRate, true, "stage2.base_lr", "a learning rate");
  c.InRangeF(s.bias_lr_factor(), 0, 100, true, "stage2.bias_lr_factor", "");
  // Checked when both are within their own ranges (else those are named).
  const bool lr_ok = s.base_lr() > 0 && s.base_lr() <= kMaxLearningRate;
  const bool factor_ok = s.bias_lr_factor() > 0 && s.bias_lr_factor() <= 100;
  c.Require(!lr_ok || !factor_ok || s.base_lr() * s.bias_lr_factor() <= kMaxLearningRate,
            "stage2.bias_lr_factor", s.bias_lr_factor(),
            "times stage2.base_lr must be at most 10 (the biases' learning rate)");
  c.InRangeF(s.weight_decay(), 0, 1, false, "stage2.weight_decay", "");
  c.InRangeF(s.weight_decay_bias(), 0, 1, false, "stage2.weight_decay_bias", "");
  c.InRangeF(s.momentum(), 0, 1, false, "stage2.momentum", "");
  c.InRange(s.max_epochs(), 1, kMaxEpochs, "stage2.max_epochs");
  c.NonNegative(s.warmup_epochs(), "stage2.warmup_epochs");
  c.Require(s.warmup_factor() > 0 && s.warmup_factor() <= 1, "stage2.warmup_factor",
            s.warmup_factor(), "must be in (0, 1]");
  c.Require(s.gamma() > 0 && s.gamma() <= 1, "stage2.gamma", s.gamma(), "must be in (0, 1]");
  c.Require(s.steps_size() <= 1000, "stage2.steps", std::to_string(s.steps_size()) + " values",
            "must hold at most 1000 epochs");
  for (int i = 0; i < std::min(s.steps_size(), 1000); ++i) {
    const std::string path = "stage2.steps[" + std::to_string(i) + "]";
    c.Require(s.steps(i) >= 1, path, s.steps(i), "must be >= 1 (an epoch number)");
    c.Require(i == 0 || s.steps(i) > s.steps(i - 1), path, s.steps(i), "steps must ascend");
  }
  c.Require(s.ids_per_batch() >= 2, "stage2.ids_per_batch", s.ids_per_batch(),
            "must be >= 2 (triplet mining needs negatives)");
  c.Require(s.num_instances() >= 2, "stage2.num_instances", s.num_instances(),
            "must be >= 2 (triplet mining needs positives)");
  c.InRange(s.ids_per_batch(), 2, kMaxBatch, "stage2.ids_per_batch");
  c.InRange(s.num_instances(), 2, kMaxBatch, "stage2.num_instances");
  c.InRange(s.ims_per_batch(), 1, kMaxBatch, "stage2.ims_per_batch");
  c.Require(int64_t{s.ims_per_batch()} == int64_t{s.ids_per_batch()} * s.num_instances(),
            "stage2.ims_per_batch", s.ims_per_batch(),
            "must equal ids_per_batch * num_instances = " + std::to_string(s.ids_per_batch()) +
                " * " + std::to_string(s.num_instances()));
  c.Positive(s.log_period(), "stage2.log_period");
  c.Positive(s.checkpoint_period(), "stage2.checkpoint_period");
  c.Positive(s.eval_period(), "stage2.eval_period");
}

void ValidateLossEvalDist(const proto::ReidConfig& cfg, Checker& c) {
  const auto& l = cfg.loss();
  c.InRangeF(l.id_weight(), 0, 1000, false, "loss.id_weight", "");
  c.InRangeF(l.triplet_weight(), 0, 1000, false, "loss.triplet_weight", "");
  c.InRangeF(l.i2t_weight(), 0, 1000, false, "loss.i2t_weight", "");
  c.Require(l.label_smoothing() >= 0 && l.label_smoothing() < 1, "loss.label_smoothing",
            l.label_smoothing(), "must be in [0, 1)");
  c.InRangeF(l.triplet_margin(), 0, 100, false, "loss.triplet_margin", "");
  const auto& e = cfg.eval();
  c.InRange(e.max_rank(), 1, 1 << 20, "eval.max_rank");
  c.InRange(e.rerank_k1(), 1, 100000, "eval.rerank_k1");
  c.Require(e.rerank_k2() >= 1 && e.rerank_k2() <= e.rerank_k1(), "eval.rerank_k2", e.rerank_k2(),
            "must be in [1, eval.rerank_k1]");
  c.Probability(e.rerank_lambda(), "eval.rerank_lambda");
  c.InRange(e.chunk_rows(), 1, 1 << 20, "eval.chunk_rows");
  c.Require(e.rerank_max_memory_mb() >= 0, "eval.rerank_max_memory_mb", e.rerank_max_memory_mb(),
            "must be >= 0 (0 = the available memory)");
  const auto& d = cfg.dist();
  c.Positive(d.bucket_cap_mb(), "dist.bucket_cap_mb");
  c.Require(d.first_bucket_mb() > 0 && d.first_bucket_mb() <= d.bucket_cap_mb(),
            "dist.first_bucket_mb", d.first_bucket_mb(), "must be in (0, dist.bucket_cap_mb]");
  c.Require(d.timeout_s() > 0 && d.timeout_s() <= 1e7, "dist.timeout_s", d.timeout_s(),
            "must be in (0, 1e7] seconds");
  c.Require(d.bucket_cap_mb() <= 1e6, "dist.bucket_cap_mb", d.bucket_cap_mb(),
            "must be <= 1e6 MiB");
  c.InRange(d.intra_op_threads(), 0, 4096, "dist.intra_op_threads");
}

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF).
bool IsUtf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    const size_t n = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xe  ? 3
                     : (c >> 3) == 0x1e ? 4
                                        : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      if ((b(i + k) & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b(i + k) & 0x3f);
    }
    const uint32_t min = n == 1 ? 0 : n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

// `name` is free text but also the `run` label of every metric: at most 128 bytes of valid UTF-8
// without control characters (a newline would split log lines). Shown with control and non-UTF-8
// bytes escaped.
void ValidateName(const std::string& name, Checker& c) {
  std::string shown;
  bool control = false;
  for (unsigned char ch : name.substr(0, 160)) {
    control = control || ch < 0x20 || ch == 0x7f;
    char hex[8];
    std::snprintf(hex, sizeof(hex), "\\x%02x", ch);
    shown += (ch < 0x20 || ch == 0x7f || ch >= 0x80) ? std::string(hex) : std::string(1, ch);
  }
  if (name.size() > 160) shown += "...";
  const bool utf8 = IsUtf8(name);
  c.Require(name.size() <= 128 && utf8 && !control, "name", "\"" + shown + "\"",
            "must be at most 128 bytes of UTF-8 text without control characters (it is the run "
            "label of every metric)");
}

void ValidateCheckpointMonitoring(const proto::ReidConfig& cfg, Checker& c) {
  ValidateName(cfg.name(), c);
  const auto& k = cfg.checkpoint();
  c.Require(k.keep_last_n() >= 1, "checkpoint.keep_last_n", k.keep_last_n(), "must be >= 1");
  c.NonNegative(k.period_steps(), "checkpoint.period_steps");
  const auto& m = cfg.monitoring();
  c.Require(m.metrics_port_base() == 0 ||
                (m.metrics_port_base() >= 1024 && m.metrics_port_base() <= 65535),
            "monitoring.metrics_port_base", m.metrics_port_base(),
            "must be 0 (off) or an unprivileged port in 1024..65535 (the node's ranks take base + "
            "local rank)");
  c.Require(m.push_period_s() == 0, "monitoring.push_period_s", m.push_period_s(),
            "must be 0: the Pushgateway receives only the end-of-run outcome (a periodic push "
            "would keep a finished run's live values there forever); live metrics are scraped "
            "from the exporters");
  const std::string& url = m.pushgateway_url();
  const size_t host = url.rfind("http://", 0) == 0 ? 7 : url.rfind("https://", 0) == 0 ? 8 : 0;
  c.Require(url.empty() || (host > 0 && url.size() > host && url[host] != '/' &&
                            url.find_first_of("?#@ \t\r\n") == std::string::npos),
            "monitoring.pushgateway_url", "\"" + url + "\"",
            "must be http[s]://host[:port][/path] (no query, credentials or spaces)");
  c.Require(m.metrics_port_base() == 0 || !m.metrics_bind().empty(), "monitoring.metrics_bind",
            "\"\"", "must name the exporters' address (e.g. 127.0.0.1 or 0.0.0.0)");
  c.Require(!m.job().empty(), "monitoring.job", "\"\"", "must not be empty");
  c.NonNegative(m.log_every_steps(), "monitoring.log_every_steps");
  c.Require(m.final_scrape_wait_s() >= 0 && m.final_scrape_wait_s() <= 3600,
            "monitoring.final_scrape_wait_s", m.final_scrape_wait_s(),
            "must be in 0..3600 seconds");
}

}  // namespace

void MaterializeDefaults(Message* msg) {
  const Descriptor* desc = msg->GetDescriptor();
  const Reflection* refl = msg->GetReflection();
  for (int i = 0; i < desc->field_count(); ++i) {
    const FieldDescriptor* f = desc->field(i);
    if (f->is_repeated()) continue;
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      MaterializeDefaults(refl->MutableMessage(msg, f));
      continue;
    }
    if (refl->HasField(*msg, f)) continue;
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        refl->SetInt32(msg, f, refl->GetInt32(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        refl->SetInt64(msg, f, refl->GetInt64(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        refl->SetUInt32(msg, f, refl->GetUInt32(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        refl->SetUInt64(msg, f, refl->GetUInt64(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        refl->SetDouble(msg, f, refl->GetDouble(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        refl->SetFloat(msg, f, refl->GetFloat(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        refl->SetBool(msg, f, refl->GetBool(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        refl->SetEnum(msg, f, refl->GetEnum(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        refl->SetString(msg, f, refl->GetString(*msg, f));
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }
}

void MergeReplacingRepeated(const Message& src, Message* dst) {
  ClearRepeatedSetIn(src, dst);
  dst->MergeFrom(src);
}

namespace {

// Parses text-format `text` (from `source`, a path or "--set") into a fresh `out`. Unknown fields
// and wrong types are problems naming the source, line and column. Returns true on success.
bool ParseConfigText(const std::string& text, const std::string& source, proto::ReidConfig* out,
                     Problems* problems) {
  ProblemCollector collector(source, text, problems);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&collector);
  parser.AllowUnknownField(false);
  out->Clear();
  return parser.ParseFromString(text, out);
}

}  // namespace

void FillListDefaults(proto::ReidConfig* cfg) {
  auto* in = cfg->mutable_input();
  if (in->pixel_mean_size() == 0) {
    for (int i = 0; i < 3; ++i) in->add_pixel_mean(0.5f);
  }
  if (in->pixel_std_size() == 0) {
    for (int i = 0; i < 3; ++i) in->add_pixel_std(0.5f);
  }
  if (cfg->stage2().steps_size() == 0) {
    cfg->mutable_stage2()->add_steps(30);
    cfg->mutable_stage2()->add_steps(50);
  }
}

Problems Validate(const proto::ReidConfig& cfg) {
  Problems problems;
  Checker c(&problems);
  RequireFinite(cfg, c);
  ValidateData(cfg, c);
  ValidateModel(cfg, c);
  ValidateInput(cfg, c);
  ValidatePrompt(cfg, c);
  ValidateModules(cfg, c);
  ValidateStage1(cfg, c);
  ValidateStage2(cfg, c);
  ValidateLossEvalDist(cfg, c);
  ValidateCheckpointMonitoring(cfg, c);
  const Problems named = problems;
  RequireBounded(cfg, c, named);
  CapProblems(&problems);
  return problems;
}

namespace {

// Reads a whole config file through the bounded regular-file reader (a FIFO would block, a
// directory read as an empty config); returns false and a problem naming the path when it cannot.
bool ReadFile(const std::string& path, std::string* contents, Problems* problems) {
  StatusOr<std::string> text = base::ReadRegularFile(path, kMaxConfigBytes, "a config file");
  if (!text.ok()) {
    problems->push_back(text.status().message());  // "PATH: not a regular file (a FIFO)", ...
    return false;
  }
  *contents = std::move(*text);
  return true;
}

}  // namespace

Problems LoadFromText(const std::string& config_text, const std::string& source,
                      const std::vector<std::string>& overrides, proto::ReidConfig* cfg) {
  Problems problems;
  cfg->Clear();
  MaterializeDefaults(cfg);
  proto::ReidConfig part;
  if (ParseConfigText(config_text, source, &part, &problems)) MergeReplacingRepeated(part, cfg);
  for (size_t i = 0; i < overrides.size(); ++i) {
    const std::string name = overrides.size() == 1 ? "--set" : "--set#" + std::to_string(i + 1);
    if (ParseConfigText(overrides[i], name, &part, &problems)) MergeReplacingRepeated(part, cfg);
  }
  FillListDefaults(cfg);
  Problems invalid = Validate(*cfg);
  problems.insert(problems.end(), invalid.begin(), invalid.end());
  CapProblems(&problems);
  return problems;
}

Problems Load(const std::string& config_path, const std::vector<std::string>& overrides,
              proto::ReidConfig* cfg) {
  std::string text;
  if (!config_path.empty()) {
    Problems problems;
    if (!ReadFile(config_path, &text, &problems)) return problems;
  }
  return LoadFromText(text, config_path.empty() ? "<defaults>" : config_path, overrides, cfg);
}

std::string ToText(const proto::ReidConfig& cfg) {
  std::string out;
  google::protobuf::TextFormat::Printer printer;
  printer.PrintToString(cfg, &out);
  return out;
}

bool ChangesShapesOrData(const std::string& path) {
  const google::protobuf::Descriptor* message = proto::ReidConfig::descriptor();
  bool changes = false;
  std::istringstream names(path);
  for (std::string name; std::getline(names, name, '.');) {
    const google::protobuf::FieldDescriptor* field =
        message == nullptr ? nullptr : message->FindFieldByName(name);
    if (field == nullptr) return false;  // not a field of the schema
    const google::protobuf::FieldOptions& options = field->options();
    if (options.HasExtension(proto::changes_shapes)) {
      changes = options.GetExtension(proto::changes_shapes);  // the innermost setting wins
    }
    message = field->message_type();
  }
  return changes;
}

}  // namespace reid::config
