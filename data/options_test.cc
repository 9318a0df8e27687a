// The data pipeline's options built from the config schema: its defaults and fields, no second
// source of values.
#include "data/options.h"

#include <gtest/gtest.h>

namespace reid::data {
namespace {

TEST(Options, FromConfigUseTheSchemaValues) {
  proto::ReidConfig cfg;
  cfg.mutable_input()->mutable_size_test()->set_height(384);
  cfg.mutable_data()->set_cache_budget_mb(3);
  cfg.mutable_data()->set_dataset(proto::DataConfig::SYNTHETIC);
  const TransformOptions train = TransformOptionsFromConfig(cfg.input(), true);
  const TransformOptions test = TransformOptionsFromConfig(cfg.input(), false);
  EXPECT_TRUE(train.train);
  EXPECT_EQ(train.height, 256);
  EXPECT_EQ(train.width, 128);
  EXPECT_EQ(train.padding, 10);
  EXPECT_FLOAT_EQ(train.erasing_prob, 0.5f);
  EXPECT_FLOAT_EQ(train.mean[2], 0.5f);
  EXPECT_FALSE(test.train);
  EXPECT_EQ(test.height, 384);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).cache_budget_bytes, 3 << 20);
  EXPECT_EQ(LoaderOptionsFromConfig(cfg).seed, 1234u);
  EXPECT_EQ(DatasetKindFromConfig(cfg.data()), DatasetKind::kMarket1501);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).ids, 64);
  EXPECT_EQ(SynthOptionsFromConfig(cfg.data()).width, 64);
}

}  // namespace
}  // namespace reid::data
