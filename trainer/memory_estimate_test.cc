// The training memory estimate: its formula on the tiny config and ViT-B/16, saturation instead
// of overflow, and the refusal of a config that validates but cannot fit (4096 x 4096 images).
#include "trainer/memory_estimate.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "base/status_test_util.h"
#include "proto/config.h"

namespace reid::trainer {
namespace {

proto::ReidConfig Tiny(const std::string& set = "") {
  proto::ReidConfig cfg;
  const config::Problems problems = config::Load(
      "configs/synthetic_tiny.textproto", set.empty() ? std::vector<std::string>{}
                                                      : std::vector<std::string>{set},
      &cfg);
  EXPECT_TRUE(problems.empty()) << problems.front();
  return cfg;
}

TEST(MemoryEstimateTest, FollowsTheFormula) {
  // 64x32 images, patch 8: 8 x 4 + 1 = 33 tokens; width 128, 4 heads, 2 layers; 32 images.
  const proto::ReidConfig cfg = Tiny();
  const MemoryEstimate e = EstimateTrainingMemory(cfg, 1, 4);
  const int64_t activations = 32 * 2 * (4 * 33 * 33 + 16 * 33 * 128) * 4;
  const int64_t params = 12 * 128 * 128 * 2 + 3 * 8 * 8 * 128 + 33 * 128 + 12 * 64 * 64 * 2 +
                         514 * 64;
  EXPECT_EQ(e.train_bytes, activations + 16 * params);
  EXPECT_EQ(e.inference_bytes, int64_t{64} * 2 * 4 * 33 * 33 * 4);  // test_batch_size 64
  // Two ranks share the global batch; AMP halves the activations, not inference.
  EXPECT_EQ(EstimateTrainingMemory(cfg, 2, 4).train_bytes, activations / 2 + 16 * params);
  EXPECT_EQ(EstimateTrainingMemory(cfg, 1, 2).train_bytes, activations / 2 + 16 * params);
  EXPECT_EQ(EstimateTrainingMemory(cfg, 1, 2).inference_bytes, e.inference_bytes);
  EXPECT_NE(e.detail.find("33^2 attention"), std::string::npos) << e.detail;
  EXPECT_OK(CheckTrainingMemory(e, 2, int64_t{1} << 30, "1 GiB", cfg));
}

TEST(MemoryEstimateTest, VitB16AtMarketSizeFitsAGpu) {
  proto::ReidConfig cfg;
  ASSERT_TRUE(config::Load("configs/market1501_improved.textproto", {}, &cfg).empty());
  const MemoryEstimate e = EstimateTrainingMemory(cfg, 1, 2);
  // 24 x 12 + 1 = 289 tokens, 12 heads, width 768, 12 layers, 64 images, fp16: about 7 GB.
  EXPECT_GT(e.bytes(), int64_t{5} << 30);
  EXPECT_LT(e.bytes(), int64_t{12} << 30);
  EXPECT_OK(CheckTrainingMemory(e, 1, int64_t{80} << 30, "CUDA device 0", cfg));
}

// input { size_train { height: 4096 width: 4096 } } validated, then aborted in LibTorch (an
// uncaught c10::Error, SIGABRT): 262,145 tokens make each attention map 275 GB.
TEST(MemoryEstimateTest, HugeImagesAreRefusedWithTheFigureAndTheLimit) {
  const proto::ReidConfig cfg =
      Tiny("input { size_train { height: 4096 width: 4096 } size_test { height: 4096 width: "
           "4096 } }");
  const MemoryEstimate e = EstimateTrainingMemory(cfg, 1, 4);
  EXPECT_EQ(e.bytes(), int64_t{64} * 2 * 4 * 262145 * 262145 * 4);  // inference: 141 TB
  const Status s = CheckTrainingMemory(e, 2, int64_t{16} << 30, "memory available on this node", cfg);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.exit_code(), 2);
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  EXPECT_NE(s.message().find("the model at input.size_train 4096x4096 needs at least "),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("(2 ranks on this node: "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("more than the 17 GB of memory available on this node"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("262145^2 attention"), std::string::npos) << s.message();
  // No limit known: no check.
  EXPECT_OK(CheckTrainingMemory(e, 1, -1, "", cfg));
}

TEST(MemoryEstimateTest, SaturatesInsteadOfOverflowing) {
  proto::ReidConfig cfg = Tiny();
  cfg.mutable_input()->mutable_size_train()->set_height(4096);
  cfg.mutable_input()->mutable_size_train()->set_width(4096);
  cfg.mutable_model()->set_vision_patch_size(1);
  cfg.mutable_model()->set_stride_size(1);
  cfg.mutable_model()->set_vision_width(16384);
  cfg.mutable_model()->set_vision_heads(16384);
  cfg.mutable_model()->set_vision_layers(256);
  cfg.mutable_stage2()->set_ims_per_batch(1 << 20);
  const MemoryEstimate e = EstimateTrainingMemory(cfg, 1, 4);
  EXPECT_EQ(e.bytes(), std::numeric_limits<int64_t>::max());
  const Status s = CheckTrainingMemory(e, 8, int64_t{1} << 40, "x", cfg);
  EXPECT_NE(s.message().find("needs at least 9.2 EB per rank"), std::string::npos)
      << s.message();
}

TEST(MemoryEstimateTest, ThisMachineReportsItsMemory) {
  std::string name;
  const int64_t available = AvailableMemoryBytes(false, 0, &name);
  EXPECT_GT(available, 0);
  EXPECT_NE(name.find("MemAvailable"), std::string::npos);
}

}  // namespace
}  // namespace reid::trainer
