// Tests for config loading: every shipped config validates, each class of mistake is reported
// with its field, and --set replaces repeated fields.
#include "proto/config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

namespace reid::config {
namespace {

// True if some problem mentions every one of `parts`.
bool HasProblem(const Problems& problems, std::initializer_list<std::string> parts) {
  return std::any_of(problems.begin(), problems.end(), [&](const std::string& p) {
    return std::all_of(parts.begin(), parts.end(),
                       [&](const std::string& part) { return p.find(part) != std::string::npos; });
  });
}

std::string Joined(const Problems& problems) {
  std::string out;
  for (const auto& p : problems) out += p + "\n";
  return out;
}

TEST(Config, EveryShippedConfigLoadsAndValidates) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("configs")) {
    if (entry.path().extension() != ".textproto") continue;
    proto::ReidConfig cfg;
    const Problems problems = Load(entry.path().string(), {}, &cfg);
    EXPECT_TRUE(problems.empty()) << entry.path() << "\n" << Joined(problems);
    ++count;
  }
  EXPECT_EQ(count, 8) << "expected 3 datasets x 2 variants + market1501_3090 + synthetic_tiny";
}

TEST(Config, DefaultsAreTheClipReidBaseline) {
  proto::ReidConfig defaults, baseline;
  ASSERT_TRUE(Load("", {}, &defaults).empty());
  ASSERT_TRUE(Load("configs/market1501_clipreid.textproto", {}, &baseline).empty());
  baseline.set_name(defaults.name());
  // The file names where CLIP's weights and merges file are; the schema has no default paths.
  EXPECT_EQ(baseline.model().weights(), "pretrained/ViT-B-16.pt");
  EXPECT_EQ(baseline.model().bpe_vocab(), "pretrained/bpe_simple_vocab_16e6.txt.gz");
  baseline.mutable_model()->set_weights("");
  baseline.mutable_model()->set_bpe_vocab("");
  EXPECT_EQ(ToText(defaults), ToText(baseline));
  EXPECT_EQ(defaults.stage2().steps_size(), 2);
  EXPECT_NE(ToText(defaults).find("max_epochs: 60"), std::string::npos) << "defaults are printed";
}

TEST(Config, ImprovedConfigFollowsThePaper) {
  proto::ReidConfig cfg;
  ASSERT_TRUE(Load("configs/msmt17_improved.textproto", {}, &cfg).empty());
  EXPECT_EQ(cfg.prompt().template_(), "{ctx} person.");
  EXPECT_EQ(cfg.prompt().n_ctx(), 8);
  EXPECT_TRUE(cfg.context_adjust().enabled());
  EXPECT_TRUE(cfg.cross_attention().enabled());
  EXPECT_EQ(cfg.input().size_train().height(), 384);
  EXPECT_EQ(cfg.stage1().warmup_epochs(), 10);
  EXPECT_EQ(cfg.data().dataset(), proto::DataConfig::MSMT17);
}

TEST(Config, SetOverridesAndReplacesRepeatedFields) {
  proto::ReidConfig cfg;
  const Problems problems =
      Load("configs/market1501_improved.textproto",
           {"stage2 { max_epochs: 3 steps: [2] }", "input { pixel_mean: [0.1, 0.2, 0.3] }"}, &cfg);
  ASSERT_TRUE(problems.empty()) << Joined(problems);
  EXPECT_EQ(cfg.stage2().max_epochs(), 3);
  ASSERT_EQ(cfg.stage2().steps_size(), 1) << "a repeated field in --set replaces the list";
  EXPECT_EQ(cfg.stage2().steps(0), 2);
  ASSERT_EQ(cfg.input().pixel_mean_size(), 3);
  EXPECT_FLOAT_EQ(cfg.input().pixel_mean(0), 0.1f);
  EXPECT_EQ(cfg.prompt().n_ctx(), 8) << "fields not in --set keep the file's value";
}

TEST(Config, UnknownFieldNamesFileLineAndField) {
  proto::ReidConfig cfg;
  const Problems problems =
      LoadFromText("seed: 1\nstage2 {\n  max_epoch: 3\n}\n", "bad.textproto", {}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"bad.textproto:3:", "max_epoch"})) << Joined(problems);
}

TEST(Config, WrongTypeNamesTheLine) {
  proto::ReidConfig cfg;
  const Problems problems = LoadFromText("stage1 { max_epochs: \"ten\" }", "x.textproto", {}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"x.textproto:1:", "max_epochs: \"ten\""})) << Joined(problems);
}

TEST(Config, UnknownFieldInSetNamesSet) {
  proto::ReidConfig cfg;
  const Problems problems = Load("", {"stage3 { max_epochs: 1 }"}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"--set", "stage3"})) << Joined(problems);
}

TEST(Config, EveryValidationProblemIsListed) {
  proto::ReidConfig cfg;
  const Problems problems = LoadFromText(
      "stage1 { base_lr: 0 }\n"
      "stage2 { ims_per_batch: 60 ids_per_batch: 16 num_instances: 4 }\n"
      "input { size_train { height: 250 width: 128 } }\n"
      "prompt { template: \"A photo of a person.\" }\n"
      "eval { rerank_lambda: 1.5 }\n",
      "many.textproto", {}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"stage1.base_lr = 0", "must be in (0, 10]"}))
      << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"stage2.ims_per_batch = 60", "16 * 4"})) << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"input.size_train.height = 250", "vision_patch_size"}))
      << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"prompt.template", "{ctx}"})) << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"eval.rerank_lambda = 1.5"})) << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"input.size_test = 256x128", "250x128"})) << Joined(problems);
  EXPECT_EQ(problems.size(), 6u) << Joined(problems);
}

// Finite but absurd floats validated before and then failed the run: a learning rate of 1e300
// overflowed the optimiser (exit 1). Each is named with its value and range; a non-finite value
// is named once, as not finite.
TEST(Config, AbsurdFloatsAreRefusedWithTheirField) {
  proto::ReidConfig cfg;
  const Problems problems = LoadFromText(
      "stage1 { base_lr: 1e300 momentum: 1.5 temperature: 0 }\n"
      "stage2 { base_lr: 1e-3 bias_lr_factor: 50000 weight_decay: -1 }\n"
      "loss { triplet_weight: 1e5 }\n"
      "model { sie_coe: 1e30 }\n"
      "input { pixel_mean: [2, 0.5, 0.5] pixel_std: [0, 0.5, 0.5] }\n"
      "dist { bucket_cap_mb: 1e20 }\n",
      "absurd.textproto", {}, &cfg);
  for (const std::pair<std::string, std::string>& want :
       std::vector<std::pair<std::string, std::string>>{
           {"stage1.base_lr = 1e+300", "must be in (0, 10] (a learning rate)"},
           {"stage1.momentum = 1.5", "[0, 1]"},
           {"stage1.temperature = 0", "(0, 1000]"},
           {"stage2.bias_lr_factor = 50000", "(0, 100]"},
           {"stage2.weight_decay = -1", "[0, 1]"},
           {"loss.triplet_weight = 100000", "[0, 1000]"},
           {"model.sie_coe = 1e+30", "[0, 1000]"},
           {"input.pixel_mean[0] = 2", "[0, 1]"},
           {"input.pixel_std[0] = 0", "(0, 10]"},
           {"dist.bucket_cap_mb = 1e+20", "must be <= 1e6 MiB"}}) {
    EXPECT_TRUE(HasProblem(problems, {want.first, want.second}))
        << want.first << "\n" << Joined(problems);
  }
  // One problem per bad field: its range, or that it is not finite.
  const Problems huge = LoadFromText("stage2 { base_lr: 1e300 }", "lr.textproto", {}, &cfg);
  ASSERT_EQ(huge.size(), 1u) << Joined(huge);
  EXPECT_EQ(huge[0], "stage2.base_lr = 1e+300: must be in (0, 10] (a learning rate)");
  const Problems inf = LoadFromText("stage2 { base_lr: inf }", "inf.textproto", {}, &cfg);
  ASSERT_EQ(inf.size(), 1u) << Joined(inf);
  EXPECT_EQ(inf[0], "stage2.base_lr = inf: must be a finite number");
  // The product that sets the biases' learning rate is bounded too.
  const Problems bias =
      LoadFromText("stage2 { base_lr: 1 bias_lr_factor: 20 }", "b.textproto", {}, &cfg);
  EXPECT_TRUE(HasProblem(bias, {"stage2.bias_lr_factor = 20", "times stage2.base_lr"}))
      << Joined(bias);
}

TEST(Config, OverlappingStrideFloorsTheGridLikeClipReid) {
  proto::ReidConfig cfg;
  EXPECT_TRUE(Load("configs/market1501_clipreid.textproto",
                   {"model { stride_size: 12 sie_camera: true sie_coe: 1.0 }"}, &cfg)
                  .empty());
  const Problems problems = Load("", {"model { stride_size: 20 }"}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"model.stride_size = 20"})) << Joined(problems);
}

TEST(Config, TestSizeMustGiveTheTrainingGrid) {
  proto::ReidConfig cfg;
  const Problems problems = Load("configs/market1501_clipreid.textproto",
                                 {"input { size_test { height: 384 width: 128 } }"}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"input.size_test = 384x128", "256x128"})) << Joined(problems);
}

TEST(Config, CrossAttentionHeadsDivideTheEmbedding) {
  proto::ReidConfig cfg;
  EXPECT_TRUE(Load("", {"cross_attention { hidden_dim: 100 num_heads: 8 }"}, &cfg).empty());
  const Problems problems = Load("", {"cross_attention { hidden_dim: 300 num_heads: 6 }"}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"cross_attention.num_heads = 6", "model.embed_dim 512"}))
      << Joined(problems);
}

TEST(Config, MonitoringFieldsAreChecked) {
  proto::ReidConfig cfg;
  EXPECT_TRUE(Load("",
                   {"monitoring { metrics_port_base: 19400 pushgateway_url: "
                    "'http://127.0.0.1:9091' }"},
                   &cfg)
                  .empty());
  EXPECT_EQ(cfg.monitoring().metrics_port_base(), 19400);
  const Problems problems =
      Load("", {"monitoring { metrics_port_base: 80 metrics_bind: '' push_period_s: 30 }"}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"monitoring.metrics_port_base = 80", "1024..65535"}))
      << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"monitoring.metrics_bind"})) << Joined(problems);
  EXPECT_TRUE(HasProblem(problems, {"monitoring.push_period_s = 30", "only the end-of-run"}))
      << Joined(problems);
  for (const char* url : {"127.0.0.1:9091", "http://", "http:///x", "http://u:p@h:1"}) {
    const Problems p =
        Load("", {std::string("monitoring { pushgateway_url: '") + url + "' }"}, &cfg);
    EXPECT_TRUE(HasProblem(p, {"monitoring.pushgateway_url", url})) << Joined(p);
  }
}

TEST(Config, NameIsABoundedTextLabel) {
  proto::ReidConfig cfg;
  EXPECT_TRUE(Load("", {"name: 'market 1501 \"v2\" caf\\303\\251'"}, &cfg).empty());
  EXPECT_EQ(cfg.name(), "market 1501 \"v2\" caf\xc3\xa9");
  EXPECT_TRUE(Load("", {}, &cfg).empty());
  EXPECT_EQ(cfg.name(), "");  // empty: the run label comes from SLURM or the output directory
  Problems p = Load("", {"name: 'two\\nlines'"}, &cfg);
  EXPECT_TRUE(HasProblem(p, {"name = \"two\\x0alines\"", "control characters"})) << Joined(p);
  p = Load("", {"name: 'bad \\377 utf8'"}, &cfg);
  EXPECT_TRUE(HasProblem(p, {"name = \"bad \\xff utf8\"", "UTF-8"})) << Joined(p);
  p = Load("", {"name: '" + std::string(129, 'x') + "'"}, &cfg);
  EXPECT_TRUE(HasProblem(p, {"name = \"xxx", "at most 128 bytes"})) << Joined(p);
}

TEST(Config, MissingFileNamesThePath) {
  proto::ReidConfig cfg;
  const Problems problems = Load("/nonexistent/x.textproto", {}, &cfg);
  EXPECT_TRUE(HasProblem(problems, {"/nonexistent/x.textproto", "cannot open"}))
      << Joined(problems);
}

TEST(Config, MaterializeDefaultsKeepsSetValues) {
  proto::ReidConfig cfg;
  cfg.mutable_stage2()->set_max_epochs(7);
  MaterializeDefaults(&cfg);
  EXPECT_EQ(cfg.stage2().max_epochs(), 7);
  EXPECT_TRUE(cfg.stage1().has_max_epochs());
  EXPECT_EQ(cfg.stage1().max_epochs(), 120);
}

// The dotted path of every leaf field below `d` (singular messages are descended into, as the
// resume check's diff of two configs does).
void LeafPaths(const google::protobuf::Descriptor* d, const std::string& prefix,
               std::vector<std::string>* out) {
  for (int i = 0; i < d->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = d->field(i);
    if (f->message_type() != nullptr && !f->is_repeated()) {
      LeafPaths(f->message_type(), prefix + f->name() + ".", out);
    } else {
      out->push_back(prefix + f->name());
    }
  }
}

// Which fields change shapes or data is declared once, by the schema's (changes_shapes) option;
// the resume check asks ChangesShapesOrData. The expected set below is the one resume has always
// refused to change (seed, the model and its prompt/adjustment/attention modules except
// model.random_init, the input sizes, the dataset and the batch geometry): a field that loses or
// gains the option without this list agreeing fails here.
TEST(Config, ChangesShapesOrDataFollowsTheSchemaOption) {
  const std::vector<std::string> kRefused = {"seed",
                                             "model.",
                                             "prompt.",
                                             "context_adjust.",
                                             "cross_attention.",
                                             "input.size_train.",
                                             "input.size_test.",
                                             "data.dataset",
                                             "data.synthetic.",
                                             "stage1.ims_per_batch",
                                             "stage2.ims_per_batch",
                                             "stage2.ids_per_batch",
                                             "stage2.num_instances"};
  std::vector<std::string> paths;
  LeafPaths(proto::ReidConfig::descriptor(), "", &paths);
  int refused = 0;
  for (const std::string& path : paths) {
    bool want = path != "model.random_init" &&
                std::any_of(kRefused.begin(), kRefused.end(),
                            [&](const std::string& p) { return path.rfind(p, 0) == 0; });
    EXPECT_EQ(ChangesShapesOrData(path), want) << path;
    refused += want;
  }
  EXPECT_GT(refused, 30);  // the model alone has 19 such fields
  EXPECT_GT(paths.size() - refused, 50);
  // The option on a message field covers it too; paths outside the schema are not refused.
  EXPECT_TRUE(ChangesShapesOrData("model"));
  EXPECT_FALSE(ChangesShapesOrData("stage2"));
  EXPECT_FALSE(ChangesShapesOrData("no_such_field"));
  EXPECT_FALSE(ChangesShapesOrData("model.no_such_field"));
  EXPECT_FALSE(ChangesShapesOrData("seed.below_a_scalar"));
}

}  // namespace
}  // namespace reid::config
